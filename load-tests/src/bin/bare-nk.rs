//! `bare-nk`: the baseline for Noise lookups (docs/BENCHMARKS.md): a bare
//! Noise NK responder on tokio with no POZ in it beyond framing. Each
//! connection: read one length-prefixed handshake message, answer with a
//! fixed response of the size of a real IDENTITY answer, close. No gate,
//! no limits, no store. `poz-load --target` against it and against a
//! gateway, in the same run, gives the ratio.
use clap::Parser;
use poz::codec::Codec;
use poz::noise::{length_prefixed, split_message, NkResponder, StaticKeypair, MAX_MESSAGE};
use poz::wire::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Bytes of the answer's payload (a sample IDENTITY answer is ~300).
    #[arg(long, default_value_t = 308)]
    payload: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let key = StaticKeypair::generate();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "listening {} key {}",
        listener.local_addr()?,
        key.public
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let payload = vec![0x5a; args.payload];
    loop {
        let (mut s, _) = listener.accept().await?;
        let (key, payload) = (key.clone(), payload.clone());
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let msg = loop {
                if let Some((m, _)) = split_message(&buf) {
                    break m.to_vec();
                }
                if buf.len() > MAX_MESSAGE + 2 {
                    return;
                }
                match s.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            };
            let Ok(mut responder) = NkResponder::new(&key) else {
                return;
            };
            let Ok(frame) = responder.read_request(&msg) else {
                return;
            };
            let id = Request::decode(&frame).map(|r| r.request_id).unwrap_or(0);
            let Ok(msgs) = responder.write_response(&Response::ok(id, payload).to_bytes()) else {
                return;
            };
            for m in msgs {
                if s.write_all(&length_prefixed(&m)).await.is_err() {
                    return;
                }
            }
            let _ = s.shutdown().await;
        });
    }
}

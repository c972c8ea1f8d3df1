//! `pozctl key`: key files, one Ed25519 key each, sealed with a passphrase.

use crate::keyio::{self, Passphrase};
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Generate a key into a new key file.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a key file's public key and ID (no passphrase needed).
    Show {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: KeyCmd, pass: &Passphrase) -> Result<ExitCode> {
    match cmd {
        KeyCmd::Generate { out } => {
            let k = keyio::create_key_file(&out, pass)?;
            outln!("wrote {} (key id {})", out.display(), k.public().id());
            outln!("public key {}", hex::encode(k.public().bytes()));
        }
        KeyCmd::Show { file, json } => {
            let kf = keyio::read_key_file(&file)?;
            if json {
                outln!(
                    "{}",
                    json!({"public_key": hex::encode(kf.public.bytes()), "id": kf.public.id(), "type": kf.public.key_type().to_string()})
                );
            } else {
                outln!("type       {}", kf.public.key_type());
                outln!("public key {}", hex::encode(kf.public.bytes()));
                outln!("id         {}", kf.public.id());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

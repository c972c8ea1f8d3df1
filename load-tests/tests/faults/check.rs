//! The checks after each fault, against the store's database directly
//! (never through the services under test): every acknowledged write is
//! stored with its bytes, every stored chain verifies from genesis, no
//! record forked, no handle was issued twice.

use crate::load::Ledger;
use poz::codec::Codec;
use poz::entries::IdentityBinding;
use poz::{Hash32, Record, SignedEntry};

/// What the checks found; each `Vec` holds one line per finding.
#[derive(Default, Debug)]
pub struct Findings {
    /// Acknowledged and not stored (or stored with other bytes).
    pub lost: Vec<String>,
    /// A record whose stored history is not one chain.
    pub forks: Vec<String>,
    /// A handle acknowledged once and stored more than once.
    pub duplicates: Vec<String>,
    /// A stored record that does not verify from genesis.
    pub unverified: Vec<String>,
}

/// Checks `ledger` (a snapshot) against the store: every record and
/// revision, the bindings from `new_from` on (those acknowledged since
/// the last check) and `sample` of the earlier ones spread evenly (all
/// of them when `sample` is at least their number).
pub async fn check(
    store: &poz_store::Store,
    provider: Hash32,
    people: &[Record],
    ledger: &Ledger,
    new_from: usize,
    sample: usize,
) -> Findings {
    let mut f = Findings::default();
    // Every record's history: one chain from genesis, matching the head,
    // and the whole record verifying.
    let mut histories = Vec::new();
    for (i, id) in std::iter::once(provider)
        .chain(people.iter().map(|r| r.id()))
        .enumerate()
    {
        // The head before the history: the load runs on while the checks
        // read, and a revision stores its history row and moves the head in
        // one transaction, so a history read after the head holds the
        // head's serial (and perhaps later ones). Read the other way round,
        // a revision landing between the two reads looked like a fork.
        let head = match store.head(&id).await {
            Ok((serial, hash, _)) => Some((serial, hash)),
            Err(e) => {
                f.lost.push(format!("record {id}: head unreadable: {e}"));
                None
            }
        };
        let history = match store.history(&id, 1).await {
            Ok(h) => h,
            Err(e) => {
                f.lost.push(format!("record {id}: history unreadable: {e}"));
                histories.push(Vec::new());
                continue;
            }
        };
        let mut prev: Option<&poz::MasterZone> = None;
        for (n, m) in history.iter().enumerate() {
            if m.serial as usize != n + 1 {
                f.forks.push(format!(
                    "record {id}: serial {} at place {}",
                    m.serial,
                    n + 1
                ));
            }
            if let Some(p) = prev {
                if m.previous_master_hash != p.current_master_hash {
                    f.forks.push(format!(
                        "record {id}: serial {} does not link to serial {}",
                        m.serial, p.serial
                    ));
                }
            }
            prev = Some(m);
        }
        if let Some((serial, hash)) = head {
            let at_head = (serial as usize)
                .checked_sub(1)
                .and_then(|i| history.get(i))
                .map(|m| (m.serial, m.current_master_hash));
            if at_head != Some((serial, hash)) {
                f.forks.push(format!(
                    "record {id}: head serial {serial} ({hash}) is not in the history"
                ));
            }
        }
        match store
            .master_answer(&id)
            .await
            .map(|b| Record::from_bytes(&b))
        {
            Ok(Ok(rec)) => match poz::verify::verify_and_accept(rec) {
                Ok(vr) if vr.complete => {}
                Ok(_) => f
                    .unverified
                    .push(format!("record {id} (#{i}): does not reach genesis")),
                Err(report) => f.unverified.push(format!(
                    "record {id} (#{i}): {}",
                    report
                        .failures()
                        .map(|(r, d)| format!("{r}: {d}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            },
            Ok(Err(e)) => f.unverified.push(format!("record {id}: undecodable: {e}")),
            Err(e) => f.lost.push(format!("record {id}: unreadable: {e}")),
        }
        histories.push(history);
    }
    // Acknowledged revisions: stored, with the acknowledged bytes.
    for a in &ledger.revisions {
        let h = &histories[a.person + 1];
        match h.get(a.serial as usize - 1) {
            Some(m) if m.current_master_hash == a.hash => {}
            Some(m) => f.lost.push(format!(
                "person {} serial {}: stored {} but {} was acknowledged",
                a.person, a.serial, m.current_master_hash, a.hash
            )),
            None => f.lost.push(format!(
                "person {} serial {}: acknowledged, not stored",
                a.person, a.serial
            )),
        }
    }
    // Acknowledged bindings: exactly one stored per handle, naming the
    // subject, with the acknowledged bytes where known.
    let earlier = new_from.min(ledger.bindings.len());
    let stride = earlier.div_ceil(sample.max(1)).max(1);
    let picked = (0..earlier)
        .step_by(stride)
        .chain(earlier..ledger.bindings.len());
    for a in picked.map(|i| &ledger.bindings[i]) {
        let stored = match store
            .handle_bindings(&provider, &a.handle, &Hash32([0; 32]), 10)
            .await
        {
            Ok((items, _)) => items,
            Err(e) => {
                f.lost
                    .push(format!("{} {}: unreadable: {e}", a.how, a.handle));
                continue;
            }
        };
        match stored.len() {
            0 => {
                f.lost
                    .push(format!("{} {}: acknowledged, not stored", a.how, a.handle));
                continue;
            }
            1 => {}
            n => f
                .duplicates
                .push(format!("{} {}: {n} bindings", a.how, a.handle)),
        }
        let (bytes, _) = &stored[0];
        if let Some(acked) = &a.entry {
            if acked != bytes {
                f.lost.push(format!(
                    "{} {}: stored bytes differ from the acknowledged",
                    a.how, a.handle
                ));
            }
        }
        let subject = SignedEntry::from_bytes(bytes)
            .ok()
            .and_then(|e| IdentityBinding::from_bytes(&e.body).ok())
            .map(|b| b.subject);
        if subject != Some(a.subject) {
            f.lost.push(format!(
                "{} {}: stored for {subject:?}, issued to {}",
                a.how, a.handle, a.subject
            ));
        }
    }
    f
}

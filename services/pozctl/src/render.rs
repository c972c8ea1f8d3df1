//! Human and JSON views of records, entries and reports.

use poz::entries::{AuthEntry, EntryBody, ServiceType, NO_CA_KEY};
use poz::record::section;
use poz::verify::{Outcome, Report};
use poz::workflow::entry_issuer;
use poz::zone::{SignedEntry, ZoneType};
use poz::{Codec, Record};
use serde_json::{json, Value};
use std::fmt::Write as _;

pub fn section_name(t: u16) -> String {
    match t {
        section::PUBLIC_KEY_MAP => "Public Key Map".into(),
        section::MASTER_ZONE => "Master Zone".into(),
        section::PRIVATE_KEY_MAP => "Private Key Map".into(),
        section::ZONE_HISTORY => "Zone History".into(),
        section::KEY_NAMES => "Key Names".into(),
        t if t <= 0xFF => {
            let z = ZoneType((t >> 4) as u8);
            format!("{} {}", z, if t & 1 == 1 { "Zone" } else { "Authority" })
        }
        _ => "unknown (optional)".into(),
    }
}

fn hosts_json(s: &poz::entries::ServiceEntry) -> Value {
    s.pool
        .iter()
        .map(|h| {
            json!({
                "hostname": h.hostname, "port": h.port, "transport": h.transport.to_string(),
                "encryption": h.encryption.to_string(),
                "server_key": h.server_key.map(hex::encode),
                "ca_key_idx": (h.ca_key_idx != NO_CA_KEY).then_some(h.ca_key_idx),
                "priority": h.priority, "weight": h.weight,
            })
        })
        .collect()
}

pub fn body_json(zone: ZoneType, e: &SignedEntry) -> Value {
    match EntryBody::decode(zone, e.kind, &e.body) {
        Err(err) => json!({ "error": err.to_string() }),
        Ok(EntryBody::Binding(b)) => json!({
            "type": "identity_binding", "issuer": b.issuer, "subject": b.subject, "handle": b.handle,
            "issued_at": b.issued_at, "expires_at": (b.expires_at != 0).then_some(b.expires_at),
        }),
        Ok(EntryBody::Revocation(r)) => json!({
            "type": "revocation", "target": r.target, "revoked_at": r.revoked_at, "reason": r.reason.to_string(),
        }),
        Ok(EntryBody::Inbox(i)) => json!({
            "type": "inbox", "guid": hex::encode(i.guid), "name": i.name, "mail_service": i.mail_service,
        }),
        Ok(EntryBody::Feed(f)) => {
            json!({ "type": "feed", "name": f.name, "feed_service": f.feed_service })
        }
        Ok(EntryBody::Auth(AuthEntry::TrustGroup {
            group_id,
            name,
            members,
        })) => json!({
            "type": "trust_group", "group_id": group_id, "name": name,
            "members": members.iter().map(|m| json!({"key_idx": m.key_idx, "value": m.value})).collect::<Vec<_>>(),
        }),
        Ok(EntryBody::Auth(AuthEntry::RevocationService { service })) => {
            json!({ "type": "revocation_service", "service": service })
        }
        Ok(EntryBody::Service(s)) => json!({
            "type": "service", "service_type": s.service_type.to_string(), "name": s.name,
            "service_hash": s.service_hash(), "pool": hosts_json(&s),
        }),
    }
}

/// The service an inbox, feed or revocation-service entry names, as the
/// record's own Service Zone holds it: its type and name, and whether it
/// is the type the entry needs (`ok`: what rule `service-ref` checks).
fn service_ref_json(rec: &Record, zone: ZoneType, e: &SignedEntry) -> Option<Value> {
    let (hash, want) = match EntryBody::decode(zone, e.kind, &e.body).ok()? {
        EntryBody::Inbox(i) => (i.mail_service, ServiceType::MAIL),
        EntryBody::Feed(f) => (f.feed_service, ServiceType::FEED),
        EntryBody::Auth(AuthEntry::RevocationService { service }) => {
            (service, ServiceType::REVOCATION)
        }
        _ => return None,
    };
    let found = crate::cmd::entries::service_named(rec, &hash);
    Some(json!({
        "hash": hash,
        "wanted": want.to_string(),
        "found": found.as_ref().map(|s| json!({"service_type": s.service_type.to_string(), "name": s.name, "hosts": s.pool.len()})),
        "ok": found.is_some_and(|s| s.service_type == want),
    }))
}

pub fn entry_json(rec: &Record, zone: ZoneType, e: &SignedEntry) -> Value {
    let issuer = entry_issuer(rec, zone, e);
    let mut j = json!({
        "kind": e.kind.to_string(),
        "digest": e.digest_in(&issuer, zone, &rec.keys).ok(),
        "signers": e.signatures.iter().map(|s| s.key_idx).collect::<Vec<_>>(),
        "body": body_json(zone, e),
    });
    if let Some(r) = service_ref_json(rec, zone, e) {
        j["service_ref"] = r;
    }
    j
}

/// "-> MAIL service "primary" (2 hosts) HASH", or what is wrong with it.
fn service_ref_text(e: &Value) -> String {
    let r = &e["service_ref"];
    let hash = r["hash"].as_str().unwrap_or("");
    let wanted = r["wanted"].as_str().unwrap_or("");
    match r["found"].as_object() {
        None => format!("-> {hash} NOT a service of this record (rule service-ref)"),
        Some(f) if r["ok"].as_bool() != Some(true) => format!(
            "-> {hash} is a {} service, NOT {wanted} (rule service-ref)",
            f["service_type"].as_str().unwrap_or("")
        ),
        Some(f) => format!(
            "-> {wanted} service \"{}\" ({} hosts) {hash}",
            f["name"].as_str().unwrap_or(""),
            f["hosts"]
        ),
    }
}

pub fn record_json(rec: &Record) -> Value {
    let m = &rec.master;
    let keys: Vec<Value> = rec
        .keys
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let i = i as u8;
            let mut roles = Vec::new();
            if let Some(mk) = m.master_keys.iter().find(|x| x.key_idx == i) {
                roles.push(format!("master group {} value {}", mk.group, mk.value));
            }
            for d in &m.delegations {
                if let Some(dk) = d.keys.iter().find(|x| x.key_idx == i) {
                    roles.push(format!("{} group {} grant {} deny {}", d.zone_type, dk.group, dk.grant, dk.deny));
                }
            }
            json!({
                "index": i, "type": k.key_type().to_string(), "public_key": hex::encode(k.bytes()), "id": k.id(),
                "name": rec.key_names.get(&i), "roles": roles,
            })
        })
        .collect();
    let zones: Vec<Value> = ZoneType::ALL
        .iter()
        .filter(|z| rec.authorities.contains_key(z) || rec.zones.contains_key(z))
        .map(|z| {
            json!({
                "zone": z.to_string(),
                "authority": rec.authorities.get(z).map(|a| json!({
                    "serial": a.serial, "timestamp": a.timestamp, "namespace": a.namespace,
                    "service_ref": (!a.service_ref.is_zero()).then_some(a.service_ref),
                    "signers": a.signatures.iter().map(|s| s.key_idx).collect::<Vec<_>>(),
                })),
                "entries": rec.zones.get(z).map(|zs| zs.entries.iter().map(|e| entry_json(rec, *z, e)).collect::<Vec<_>>()).unwrap_or_default(),
            })
        })
        .collect();
    json!({
        "record_id": rec.id(),
        "draft": !m.is_finalized(),
        "size": rec.to_bytes().len(),
        "toc": rec.toc().iter().map(|e| json!({
            "type": format!("{:#06x}", e.section_type), "name": section_name(e.section_type),
            "offset": e.offset, "length": e.length,
        })).collect::<Vec<_>>(),
        "keys": keys,
        "master_zone": {
            "serial": m.serial, "timestamp": m.timestamp,
            "original_master_hash": m.original_master_hash, "original_timestamp": m.original_timestamp,
            "current_master_hash": m.current_master_hash, "previous_master_hash": m.previous_master_hash,
            "master_keys": m.master_keys.iter().map(|k| json!({"key_idx": k.key_idx, "group": k.group, "value": k.value})).collect::<Vec<_>>(),
            "delegations": m.delegations.iter().map(|d| json!({
                "zone": d.zone_type.to_string(),
                "keys": d.keys.iter().map(|k| json!({"key_idx": k.key_idx, "group": k.group, "grant": k.grant, "deny": k.deny})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "signers": m.signatures.iter().map(|s| s.key_idx).collect::<Vec<_>>(),
        },
        "history": rec.history.iter().map(|h| json!({"serial": h.serial, "timestamp": h.timestamp, "hash": h.current_master_hash})).collect::<Vec<_>>(),
        "zones": zones,
        "private_key_map": rec.private_keys.as_ref().map(|p| json!({
            "kdf": p.kdf.to_string(), "m_cost_kib": p.params.m_cost_kib, "t_cost": p.params.t_cost,
            "p_cost": p.params.p_cost, "aead": p.aead.to_string(),
        })),
    })
}

/// Milliseconds since the epoch as UTC "YYYY-MM-DD hh:mm:ss.mmm".
pub fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// A binding request's state and SUBMIT_STATUS message in words (SPEC
/// §14.5's table): a provider's refusal (`refused: REASON`) is said once,
/// a rule's name says the handle could not be issued.
pub fn decision(state: poz::wire::SubmissionState, message: &str) -> String {
    use poz::wire::SubmissionState as S;
    match state {
        S::REFUSED => match message.strip_prefix("refused: ") {
            Some(reason) => format!("refused by the provider: {reason}"),
            None if message.starts_with("expired: ") => message.to_string(),
            None if message.is_empty() => "refused".into(),
            None => format!("refused: the handle could not be issued: {message}"),
        },
        _ if message.is_empty() => state.to_string(),
        _ => format!("{state}: {message}"),
    }
}

pub fn record_text(rec: &Record) -> String {
    let j = record_json(rec);
    let m = &rec.master;
    let mut o = String::new();
    let _ = writeln!(o, "record      {}", rec.id());
    let _ = writeln!(
        o,
        "serial      {}{}   at {}",
        m.serial,
        if m.is_finalized() {
            ""
        } else {
            " (DRAFT: not applied)"
        },
        time(m.timestamp)
    );
    let _ = writeln!(o, "hash        {}", m.current_master_hash);
    let _ = writeln!(o, "previous    {}", m.previous_master_hash);
    let _ = writeln!(
        o,
        "size        {} bytes, {} sections",
        j["size"],
        rec.toc().len()
    );
    let _ = writeln!(o, "keys");
    for k in j["keys"].as_array().into_iter().flatten() {
        let name = k["name"]
            .as_str()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        let roles: Vec<&str> = k["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str())
            .collect();
        let _ = writeln!(
            o,
            "  [{}] {} {}{}  {}",
            k["index"],
            k["type"].as_str().unwrap_or(""),
            &k["id"].as_str().unwrap_or("")[..16],
            name,
            roles.join("; ")
        );
    }
    let mut groups: std::collections::BTreeMap<u8, Vec<String>> = Default::default();
    for k in &m.master_keys {
        groups
            .entry(k.group)
            .or_default()
            .push(format!("key {} = {}", k.key_idx, k.value));
    }
    for (g, ks) in groups {
        let _ = writeln!(o, "group {g}     {}", ks.join(", "));
    }
    for d in &m.delegations {
        let ks: Vec<String> = d
            .keys
            .iter()
            .map(|k| {
                format!(
                    "key {} (group {}, grant {}, deny {})",
                    k.key_idx, k.group, k.grant, k.deny
                )
            })
            .collect();
        let _ = writeln!(o, "delegates   {}: {}", d.zone_type, ks.join(", "));
    }
    let sig: Vec<String> = m.signatures.iter().map(|s| s.key_idx.to_string()).collect();
    let _ = writeln!(
        o,
        "signed by   keys {}",
        if sig.is_empty() {
            "(none)".into()
        } else {
            sig.join(", ")
        }
    );
    if !rec.history.is_empty() {
        let h: Vec<String> = rec.history.iter().map(|h| h.serial.to_string()).collect();
        let _ = writeln!(o, "history     serials {}", h.join(", "));
    }
    for z in j["zones"].as_array().into_iter().flatten() {
        let entries = z["entries"].as_array().map(|e| e.len()).unwrap_or(0);
        let ns = z["authority"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| format!(" namespace \"{s}\""))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "zone        {}{}: {} entries",
            z["zone"].as_str().unwrap_or(""),
            ns,
            entries
        );
        for e in z["entries"].as_array().into_iter().flatten().take(20) {
            let b = &e["body"];
            let what = match b["type"].as_str() {
                Some("identity_binding") => format!(
                    "binding \"{}\" -> {}",
                    b["handle"].as_str().unwrap_or(""),
                    b["subject"].as_str().unwrap_or("")
                ),
                Some("revocation") => format!("revokes {}", b["target"].as_str().unwrap_or("")),
                Some("service") => format!(
                    "service {} \"{}\" ({} hosts) hash {}",
                    b["service_type"].as_str().unwrap_or(""),
                    b["name"].as_str().unwrap_or(""),
                    b["pool"].as_array().map(|p| p.len()).unwrap_or(0),
                    b["service_hash"].as_str().unwrap_or("")
                ),
                Some("inbox") => format!(
                    "inbox \"{}\" guid {} {}",
                    b["name"].as_str().unwrap_or(""),
                    b["guid"].as_str().unwrap_or(""),
                    service_ref_text(e)
                ),
                Some("feed") => format!(
                    "feed \"{}\" {}",
                    b["name"].as_str().unwrap_or(""),
                    service_ref_text(e)
                ),
                Some("trust_group") => {
                    let members: Vec<String> = b["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| format!("key {} = {}", m["key_idx"], m["value"]))
                        .collect();
                    format!(
                        "trust group {} \"{}\": {}",
                        b["group_id"],
                        b["name"].as_str().unwrap_or(""),
                        members.join(", ")
                    )
                }
                Some("revocation_service") => {
                    format!("revocation service {}", service_ref_text(e))
                }
                Some(t) => format!("{t} {}", b["name"].as_str().unwrap_or("")),
                None => format!("undecodable: {}", b["error"]),
            };
            let _ = writeln!(o, "  - {what}");
        }
        if entries > 20 {
            let _ = writeln!(o, "  … {} more (use --json)", entries - 20);
        }
    }
    if rec.private_keys.is_some() {
        let _ = writeln!(o, "private     Private Key Map present (sealed)");
    }
    o
}

pub fn report_text(r: &Report) -> String {
    let mut o = String::new();
    for c in &r.checks {
        let (mark, detail) = match &c.outcome {
            Outcome::Pass => ("ok  ", String::new()),
            Outcome::Fail(d) => ("FAIL", format!("  {d}")),
            Outcome::NotChecked(d) => ("--  ", format!("  not checked: {d}")),
        };
        let _ = writeln!(o, "{mark} {}{detail}", c.rule);
    }
    o
}

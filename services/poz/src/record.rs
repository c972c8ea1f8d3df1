//! A whole POZ record: header, table of contents, sections.
//!
//! Layout (SPEC §3): `"POZ" ‖ u8 version ‖ u32 total length`, then
//! `u16 entry count` and that many TOC entries `(u16 type, u32 offset,
//! u32 length)`, then the sections, in TOC order, back to back. Types are
//! strictly ascending; offsets are absolute; there are no gaps, overlaps or
//! trailing bytes, so every record has exactly one encoding.

use crate::codec::{read_str8, write_str8, Codec, DecodeError, Reader};
use crate::keys::PublicKeyMap;
use crate::master::MasterZone;
use crate::private::SealedKeys;
use crate::zone::{AuthoritySection, ZoneSection, ZoneType};
use crate::Hash32;
use std::collections::BTreeMap;

pub const MAGIC: &[u8; 3] = b"POZ";
pub const VERSION: u8 = 0;
pub const HEADER_LEN: usize = 8;
pub const TOC_ENTRY_LEN: usize = 10;
/// There are 13 section types today; leave room for optional ones.
pub const MAX_TOC_ENTRIES: usize = 64;

/// Section type numbers.
pub mod section {
    pub const PUBLIC_KEY_MAP: u16 = 0x0000;
    pub const MASTER_ZONE: u16 = 0x0001;
    pub const PRIVATE_KEY_MAP: u16 = 0x8002;
    pub const ZONE_HISTORY: u16 = 0x8003;
    pub const KEY_NAMES: u16 = 0x8004;
    /// Types with this bit set may be skipped by a reader that does not
    /// know them; any other unknown type makes the record unreadable.
    pub const OPTIONAL_BIT: u16 = 0x8000;
}

/// One TOC entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TocEntry {
    pub section_type: u16,
    pub offset: u32,
    pub length: u32,
}

/// Earlier master-zone revisions (section 0x8003), oldest first.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ZoneHistory {
    pub revisions: Vec<MasterZone>,
}

impl Codec for ZoneHistory {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.revisions.len() as u32).to_be_bytes());
        for m in &self.revisions {
            let b = m.to_bytes();
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(&b);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u32("zone_history.count")? as usize;
        // A master zone is at least 125 bytes plus its length prefix.
        if n == 0 || n > r.left() / 129 {
            return Err(DecodeError::InvalidValue {
                field: "zone_history.count",
                offset: r.offset() - 4,
                value: n as u64,
            });
        }
        let mut revisions: Vec<MasterZone> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.offset();
            let len = r.u32("zone_history.length")? as usize;
            let mut sub = r.sub(len, "zone_history.revision")?;
            let m = MasterZone::read(&mut sub)?;
            sub.expect_end("zone_history.revision")?;
            if let Some(prev) = revisions.last() {
                if prev.serial >= m.serial {
                    return Err(DecodeError::NotCanonical {
                        field: "zone_history.revisions",
                        offset: at,
                    });
                }
            }
            revisions.push(m);
        }
        Ok(ZoneHistory { revisions })
    }
}

/// Human names for keys (section 0x8004).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct KeyNames {
    pub names: BTreeMap<u8, String>,
}

impl Codec for KeyNames {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.names.len() as u8);
        for (idx, name) in &self.names {
            out.push(*idx);
            write_str8(out, name);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u8("key_names.count")? as usize;
        if n == 0 {
            return Err(r.layout(
                "key_names.count",
                "an empty section is omitted, not written",
            ));
        }
        let mut names = BTreeMap::new();
        let mut last: Option<u8> = None;
        for _ in 0..n {
            let at = r.offset();
            let idx = r.u8("key_names.key_idx")?;
            if last.is_some_and(|l| l >= idx) {
                return Err(DecodeError::NotCanonical {
                    field: "key_names",
                    offset: at,
                });
            }
            last = Some(idx);
            names.insert(idx, read_str8(r, "key_names.name")?);
        }
        Ok(KeyNames { names })
    }
}

/// A decoded POZ record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    pub keys: PublicKeyMap,
    pub master: MasterZone,
    pub authorities: BTreeMap<ZoneType, AuthoritySection>,
    pub zones: BTreeMap<ZoneType, ZoneSection>,
    pub private_keys: Option<SealedKeys>,
    /// Earlier revisions, oldest first; empty means the section is absent.
    pub history: Vec<MasterZone>,
    /// Empty means the section is absent.
    pub key_names: BTreeMap<u8, String>,
    /// Optional sections this implementation does not know, kept verbatim
    /// so a record passes through unchanged.
    pub unknown_optional: BTreeMap<u16, Vec<u8>>,
}

impl Record {
    pub fn new(keys: PublicKeyMap, master: MasterZone) -> Self {
        Record {
            keys,
            master,
            authorities: BTreeMap::new(),
            zones: BTreeMap::new(),
            private_keys: None,
            history: Vec::new(),
            key_names: BTreeMap::new(),
            unknown_optional: BTreeMap::new(),
        }
    }

    /// The record's permanent ID: its genesis master hash.
    pub fn id(&self) -> Hash32 {
        self.master.record_id()
    }

    /// Sections as (type, bytes), ascending by type.
    pub fn sections(&self) -> Vec<(u16, Vec<u8>)> {
        let mut s: Vec<(u16, Vec<u8>)> = vec![
            (section::PUBLIC_KEY_MAP, self.keys.to_bytes()),
            (section::MASTER_ZONE, self.master.to_bytes()),
        ];
        for (z, a) in &self.authorities {
            s.push((z.authority_section(), a.to_bytes()));
        }
        for (z, zs) in &self.zones {
            s.push((z.zone_section(), zs.to_bytes()));
        }
        if let Some(p) = &self.private_keys {
            s.push((section::PRIVATE_KEY_MAP, p.to_bytes()));
        }
        if !self.history.is_empty() {
            s.push((
                section::ZONE_HISTORY,
                ZoneHistory {
                    revisions: self.history.clone(),
                }
                .to_bytes(),
            ));
        }
        if !self.key_names.is_empty() {
            s.push((
                section::KEY_NAMES,
                KeyNames {
                    names: self.key_names.clone(),
                }
                .to_bytes(),
            ));
        }
        for (t, b) in &self.unknown_optional {
            s.push((*t, b.clone()));
        }
        s.sort_by_key(|(t, _)| *t);
        s
    }

    /// The TOC the encoding will carry.
    pub fn toc(&self) -> Vec<TocEntry> {
        layout(&self.sections()).0
    }
}

fn layout(sections: &[(u16, Vec<u8>)]) -> (Vec<TocEntry>, usize) {
    let mut offset = HEADER_LEN + 2 + TOC_ENTRY_LEN * sections.len();
    let mut toc = Vec::with_capacity(sections.len());
    for (t, b) in sections {
        toc.push(TocEntry {
            section_type: *t,
            offset: offset as u32,
            length: b.len() as u32,
        });
        offset += b.len();
    }
    (toc, offset)
}

fn known_zone_section(t: u16) -> Option<(ZoneType, bool)> {
    if t > 0xFF || t & 0x0E != 0 {
        return None;
    }
    let z = ZoneType((t >> 4) as u8);
    z.is_known().then_some((z, t & 1 == 1))
}

impl Codec for Record {
    fn encode(&self, out: &mut Vec<u8>) {
        let sections = self.sections();
        let (toc, total) = layout(&sections);
        out.reserve(total);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(toc.len() as u16).to_be_bytes());
        for e in &toc {
            out.extend_from_slice(&e.section_type.to_be_bytes());
            out.extend_from_slice(&e.offset.to_be_bytes());
            out.extend_from_slice(&e.length.to_be_bytes());
        }
        for (_, b) in &sections {
            out.extend_from_slice(b);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.offset();
        let magic = r.take(3, "header.magic")?;
        if magic != MAGIC {
            return Err(DecodeError::Layout {
                field: "header.magic",
                offset: start,
                reason: "not a POZ record (magic is not \"POZ\")",
            });
        }
        let version = r.u8("header.version")?;
        if version != VERSION {
            return Err(r.invalid("header.version", version as u64));
        }
        let total = r.u32("header.length")? as usize;
        // The header's length must be exactly the bytes that follow plus
        // the header: no truncation, no trailing bytes.
        if total != r.left() + HEADER_LEN {
            return Err(DecodeError::Layout {
                field: "header.length",
                offset: start + 4,
                reason: "length does not match the record's size",
            });
        }
        let count = r.u16("toc.count")? as usize;
        if count > MAX_TOC_ENTRIES {
            return Err(DecodeError::TooMany {
                field: "toc.count",
                offset: r.offset() - 2,
                count: count as u64,
                max: MAX_TOC_ENTRIES as u64,
            });
        }
        let mut toc: Vec<TocEntry> = Vec::with_capacity(count);
        let mut expected = HEADER_LEN + 2 + TOC_ENTRY_LEN * count;
        for _ in 0..count {
            let at = r.offset();
            let e = TocEntry {
                section_type: r.u16("toc.type")?,
                offset: r.u32("toc.offset")?,
                length: r.u32("toc.length")?,
            };
            if toc.last().is_some_and(|p| p.section_type >= e.section_type) {
                return Err(DecodeError::NotCanonical {
                    field: "toc.type",
                    offset: at,
                });
            }
            if e.offset as usize != expected {
                return Err(DecodeError::Layout {
                    field: "toc.offset",
                    offset: at + 2,
                    reason: "section does not start where the previous one ends (gap or overlap)",
                });
            }
            expected = expected.saturating_add(e.length as usize);
            if expected > total {
                return Err(DecodeError::Layout {
                    field: "toc.length",
                    offset: at + 6,
                    reason: "section extends past the end of the record",
                });
            }
            toc.push(e);
        }
        if expected != total {
            return Err(DecodeError::Layout {
                field: "toc",
                offset: r.offset(),
                reason: "bytes after the last section",
            });
        }
        if toc.first().map(|e| e.section_type) != Some(section::PUBLIC_KEY_MAP) {
            return Err(DecodeError::Layout {
                field: "toc",
                offset: start + HEADER_LEN,
                reason: "required section 0x0000 (Public Key Map) is missing",
            });
        }
        if toc.get(1).map(|e| e.section_type) != Some(section::MASTER_ZONE) {
            return Err(DecodeError::Layout {
                field: "toc",
                offset: start + HEADER_LEN,
                reason: "required section 0x0001 (Master Zone) is missing",
            });
        }

        let mut keys = None;
        let mut master = None;
        let mut rec_auth = BTreeMap::new();
        let mut rec_zones = BTreeMap::new();
        let mut private_keys = None;
        let mut history = Vec::new();
        let mut key_names = BTreeMap::new();
        let mut unknown_optional = BTreeMap::new();
        for e in &toc {
            let mut s = r.sub(e.length as usize, "section")?;
            match e.section_type {
                section::PUBLIC_KEY_MAP => {
                    keys = Some(PublicKeyMap::read(&mut s)?);
                    s.expect_end("public_key_map")?;
                }
                section::MASTER_ZONE => {
                    master = Some(MasterZone::read(&mut s)?);
                    s.expect_end("master_zone")?;
                }
                section::PRIVATE_KEY_MAP => {
                    private_keys = Some(SealedKeys::read(&mut s)?);
                    s.expect_end("private_key_map")?;
                }
                section::ZONE_HISTORY => {
                    history = ZoneHistory::read(&mut s)?.revisions;
                    s.expect_end("zone_history")?;
                }
                section::KEY_NAMES => {
                    key_names = KeyNames::read(&mut s)?.names;
                    s.expect_end("key_names")?;
                }
                t => match known_zone_section(t) {
                    Some((z, false)) => {
                        let a = AuthoritySection::read(&mut s)?;
                        if a.zone_type != z {
                            return Err(DecodeError::Layout {
                                field: "authority.zone_type",
                                offset: e.offset as usize,
                                reason: "zone type does not match the section type",
                            });
                        }
                        s.expect_end("authority")?;
                        rec_auth.insert(z, a);
                    }
                    Some((z, true)) => {
                        let zs = ZoneSection::read(&mut s)?;
                        s.expect_end("zone")?;
                        rec_zones.insert(z, zs);
                    }
                    None if t & section::OPTIONAL_BIT != 0 => {
                        unknown_optional.insert(t, s.rest().to_vec());
                    }
                    None => {
                        return Err(DecodeError::InvalidValue {
                            field: "toc.type (unknown required section)",
                            offset: e.offset as usize,
                            value: t as u64,
                        })
                    }
                },
            }
        }
        // The first two TOC entries were checked above, so both are set.
        let (Some(keys), Some(master)) = (keys, master) else {
            return Err(r.layout("toc", "required sections missing"));
        };
        Ok(Record {
            keys,
            master,
            authorities: rec_auth,
            zones: rec_zones,
            private_keys,
            history,
            key_names,
            unknown_optional,
        })
    }
}

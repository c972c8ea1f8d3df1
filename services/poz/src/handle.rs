//! Which handle may be issued to whom (SPEC §8.4.1–§8.4.3): the handle
//! namespace policy, the confusable skeleton, and the rule that decides
//! whether a new binding may join the bindings a provider already holds
//! for look-alike handles. Sans-I/O: the store, the Provider API and the
//! submit gateway feed it what they read and act on its verdict, so every
//! path refuses the same handles with the same rule name.
//!
//! The Unicode tables are the crates' (UTS #39 skeleton and restriction
//! levels from `unicode-security`, NFC from `unicode-normalization`, case
//! folding from `caseless`, general categories from `unicode-properties`,
//! bidi classes from `unicode-bidi`); none is written here.

use crate::hash::Hash32;
use crate::types::RevocationReason;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use unicode_security::{GeneralSecurityProfile, RestrictionLevel, RestrictionLevelDetection};

/// Largest handle, in bytes.
pub const MAX_HANDLE: usize = 64;

/// The rule of SPEC §8.4.1's baseline that `h` breaks as a handle, in
/// words that start with the rule's name, or `None`: 1..=64 bytes, no
/// bidi control, no format character. Every handle on the wire and in a
/// binding is held to it whatever the provider's policy, so no verifier
/// accepts, and no tool prints, a handle that displays as another
/// (`\u{202E}ecila` shows as "alice"). (Control characters and bad UTF-8
/// are refused by `str8` itself.)
pub fn handle_rule_broken(h: &str) -> Option<&'static str> {
    match check_baseline(h) {
        Ok(()) => None,
        Err(e) => Some(match e.rule {
            HandleRule::Length if h.is_empty() => "handle-length: handle is empty (1..=64 bytes)",
            HandleRule::Length => "handle-length: handle is longer than 64 bytes",
            HandleRule::Bidi => {
                "handle-bidi: handle has a bidi control character (it could display as another)"
            }
            _ => "handle-format: handle has a format or control character (invisible on screen)",
        }),
    }
}

/// The punctuation a handle may hold besides letters and digits, under
/// every policy: full stop, hyphen-minus, low line (SPEC §8.4.1).
pub const HANDLE_PUNCTUATION: &[char] = &['.', '-', '_'];

/// A provider's handle namespace policy (SPEC §8.4.1), set in the Provider
/// API's and pozd's configuration (`handle_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HandlePolicy {
    /// Lowercase `a`–`z`, `0`–`9` and [`HANDLE_PUNCTUATION`]: the default
    /// for new deployments.
    #[default]
    Ascii,
    /// Any script, one at a time: NFC, case-folded, no bidi controls, no
    /// format (Cf) characters, only characters UTS #39's General Security
    /// Profile allows in identifiers, and at most UTS #39's "highly
    /// restrictive" mix of scripts.
    Unicode,
}

impl HandlePolicy {
    /// The configuration name: `ascii` or `unicode`.
    pub fn name(self) -> &'static str {
        match self {
            HandlePolicy::Ascii => "ascii",
            HandlePolicy::Unicode => "unicode",
        }
    }
}

impl std::fmt::Display for HandlePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for HandlePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ascii" => Ok(HandlePolicy::Ascii),
            "unicode" => Ok(HandlePolicy::Unicode),
            other => Err(format!(
                "handle policy {other:?}: expected \"ascii\" or \"unicode\""
            )),
        }
    }
}

/// The rule a handle or a binding failed (SPEC §8.4.1–§8.4.3); its name
/// begins every refusal's message on every path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandleRule {
    /// Empty, or longer than [`MAX_HANDLE`] bytes.
    Length,
    /// A bidi control (UAX #9 explicit embedding, override or isolate).
    Bidi,
    /// A format character (general category Cf: zero-width space, joiners,
    /// marks) or any other control.
    Format,
    /// Not in Unicode Normalization Form C.
    Nfc,
    /// Not case-folded (Unicode default case folding changes it).
    Case,
    /// `ascii` policy: a character outside `a`–`z`, `0`–`9` and the
    /// punctuation set.
    Charset,
    /// `unicode` policy: a character UTS #39's General Security Profile
    /// does not allow in identifiers (symbols, obsolete scripts), or
    /// punctuation outside the set.
    Identifier,
    /// Punctuation first, last, or twice in a row.
    Punctuation,
    /// `unicode` policy: scripts mixed beyond UTS #39 "highly
    /// restrictive".
    MixedScript,
    /// The confusable skeleton matches another subject's live or reserved
    /// handle of the same provider.
    Confusable,
    /// The handle has a live binding to another subject.
    BindingUnique,
    /// The handle's binding was revoked and the handle is reserved.
    Reserved,
}

impl HandleRule {
    /// The rule's name as SPEC writes it.
    pub fn name(self) -> &'static str {
        match self {
            HandleRule::Length => "handle-length",
            HandleRule::Bidi => "handle-bidi",
            HandleRule::Format => "handle-format",
            HandleRule::Nfc => "handle-nfc",
            HandleRule::Case => "handle-case",
            HandleRule::Charset => "handle-charset",
            HandleRule::Identifier => "handle-identifier",
            HandleRule::Punctuation => "handle-punctuation",
            HandleRule::MixedScript => "handle-mixed-script",
            HandleRule::Confusable => "handle-confusable",
            HandleRule::BindingUnique => "binding-unique",
            HandleRule::Reserved => "handle-reserved",
        }
    }

    /// Whether the rule is about the handle's own characters (a bad
    /// argument) rather than about who holds it (a conflict).
    pub fn is_about_the_handle(self) -> bool {
        !matches!(
            self,
            HandleRule::Confusable | HandleRule::BindingUnique | HandleRule::Reserved
        )
    }
}

impl std::fmt::Display for HandleRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a handle may not be issued: the rule and what failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {detail}")]
pub struct HandleRefused {
    pub rule: HandleRule,
    pub detail: String,
}

fn refuse(rule: HandleRule, detail: String) -> Result<(), HandleRefused> {
    Err(HandleRefused { rule, detail })
}

/// Whether `c` is a bidi control: UAX #9's explicit embeddings, overrides
/// and isolates (and their terminators).
fn is_bidi_control(c: char) -> bool {
    use unicode_bidi::BidiClass::*;
    matches!(
        unicode_bidi::bidi_class(c),
        LRE | RLE | LRO | RLO | PDF | LRI | RLI | FSI | PDI
    )
}

/// Checks the characters every handle must satisfy whatever the policy:
/// length, no bidi controls, no format or control characters (SPEC
/// §8.4.1). The store applies this to every binding it commits.
pub fn check_baseline(handle: &str) -> Result<(), HandleRefused> {
    if handle.is_empty() || handle.len() > MAX_HANDLE {
        return refuse(
            HandleRule::Length,
            format!("a handle is 1..={MAX_HANDLE} bytes, got {}", handle.len()),
        );
    }
    for (i, c) in handle.char_indices() {
        if is_bidi_control(c) {
            return refuse(
                HandleRule::Bidi,
                format!("bidi control U+{:04X} at byte {i}", c as u32),
            );
        }
        if c.is_control() || c.general_category() == GeneralCategory::Format {
            return refuse(
                HandleRule::Format,
                format!("format or control character U+{:04X} at byte {i}", c as u32),
            );
        }
    }
    Ok(())
}

/// Checks a handle against a namespace policy (SPEC §8.4.1). The rules
/// are checked in the order SPEC lists them and the first failure is
/// returned.
pub fn check_handle(handle: &str, policy: HandlePolicy) -> Result<(), HandleRefused> {
    check_baseline(handle)?;
    let nfc: String = handle.nfc().collect();
    if nfc != handle {
        return refuse(
            HandleRule::Nfc,
            "not in Normalization Form C (NFC)".to_string(),
        );
    }
    let folded = caseless::default_case_fold_str(handle);
    if folded != handle {
        return refuse(
            HandleRule::Case,
            format!("not case-folded (would be {folded:?})"),
        );
    }
    for (i, c) in handle.char_indices() {
        let punct = HANDLE_PUNCTUATION.contains(&c);
        let allowed = match policy {
            HandlePolicy::Ascii => c.is_ascii_lowercase() || c.is_ascii_digit() || punct,
            HandlePolicy::Unicode => punct || (!c.is_ascii_punctuation() && c.identifier_allowed()),
        };
        if !allowed {
            let rule = match policy {
                HandlePolicy::Ascii => HandleRule::Charset,
                HandlePolicy::Unicode => HandleRule::Identifier,
            };
            return refuse(
                rule,
                format!(
                    "U+{:04X} at byte {i} is not allowed by the {policy} policy",
                    c as u32
                ),
            );
        }
    }
    let chars: Vec<char> = handle.chars().collect();
    let is_punct = |c: &char| HANDLE_PUNCTUATION.contains(c);
    if chars.first().is_some_and(is_punct)
        || chars.last().is_some_and(is_punct)
        || chars.windows(2).any(|w| is_punct(&w[0]) && is_punct(&w[1]))
    {
        return refuse(
            HandleRule::Punctuation,
            "punctuation may not begin or end a handle or follow punctuation".to_string(),
        );
    }
    if policy == HandlePolicy::Unicode {
        let level = handle.detect_restriction_level();
        if level > RestrictionLevel::HighlyRestrictive {
            return refuse(
                HandleRule::MixedScript,
                format!("scripts mixed beyond UTS #39 highly restrictive ({level:?})"),
            );
        }
    }
    Ok(())
}

/// The handle's confusable skeleton (SPEC §8.4.2): the default case
/// folding of the UTS #39 `skeleton` of its default case folding (the
/// skeleton maps some characters to capitals, `0` to `O`; folding again
/// makes the comparison case-blind). Two handles with the same skeleton
/// look alike (`alice`, `Alice`, `аlice` with a Cyrillic а, `alıce`, and
/// in ASCII `rn`/`m`, `l`/`1`, `o`/`0`).
pub fn skeleton(handle: &str) -> String {
    let folded = caseless::default_case_fold_str(handle);
    let sk: String = unicode_security::skeleton(&folded).collect();
    caseless::default_case_fold_str(&sk)
}

/// What a provider already holds under one skeleton: one stored binding,
/// with its revocation if any and whether an operator freed its handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldBinding {
    pub handle: String,
    pub subject: Hash32,
    /// Milliseconds since the Unix epoch; 0: no expiry.
    pub expires_at: u64,
    /// The revocation naming it: reason and `revoked_at` (ms).
    pub revocation: Option<(RevocationReason, u64)>,
    /// An operator freed the handle after the revocation (SPEC §8.4.3).
    pub freed: bool,
}

/// How long a revoked handle stays reserved (SPEC §8.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Reservation {
    /// After a revocation for reason unspecified or superseded, the handle
    /// is free again this many milliseconds after `revoked_at`; `None`
    /// (the default): until an operator frees it. Never applies to
    /// key-compromise, account-closed or policy revocations.
    pub cooldown_ms: Option<u64>,
}

impl Reservation {
    /// Whether a revocation for `reason` at `revoked_at` still reserves
    /// the handle at `now` (ms) against `subject` (the holder's own
    /// record may take it back after a `superseded` revocation).
    fn reserves(&self, reason: RevocationReason, revoked_at: u64, now: u64, same: bool) -> bool {
        let never_lapses = matches!(
            reason,
            RevocationReason::KEY_COMPROMISE
                | RevocationReason::ACCOUNT_CLOSED
                | RevocationReason::POLICY
        );
        if never_lapses {
            return true;
        }
        if same && reason == RevocationReason::SUPERSEDED {
            return false;
        }
        match self.cooldown_ms {
            None => true,
            Some(c) => now < revoked_at.saturating_add(c),
        }
    }
}

/// Decides whether a binding of `handle` to `subject` may be issued at
/// `now` (ms), given every binding the provider holds whose handle has the
/// same [`skeleton`] (SPEC §8.4.2, §8.4.3). In order, for each held one:
/// freed by an operator: ignored; revoked: `handle-reserved` while the
/// [`Reservation`] holds; expired: ignored; live and to the same subject:
/// fine (a retry, a renewal); live and to another subject:
/// `binding-unique` for the same handle, `handle-confusable` for a
/// look-alike.
pub fn judge_issue(
    handle: &str,
    subject: &Hash32,
    now: u64,
    held: &[HeldBinding],
    reservation: &Reservation,
) -> Result<(), HandleRefused> {
    for h in held {
        if h.freed {
            continue;
        }
        let same = h.subject == *subject;
        if let Some((reason, at)) = h.revocation {
            if reservation.reserves(reason, at, now, same) {
                return refuse(
                    HandleRule::Reserved,
                    format!(
                        "{:?} was revoked ({reason}) and stays reserved until an operator frees it{}",
                        h.handle,
                        match (reason, reservation.cooldown_ms) {
                            (RevocationReason::UNSPECIFIED | RevocationReason::SUPERSEDED, Some(c)) =>
                                format!(" or {} s pass", c / 1000),
                            _ => String::new(),
                        }
                    ),
                );
            }
            continue;
        }
        if h.expires_at != 0 && now >= h.expires_at {
            continue;
        }
        if same {
            continue;
        }
        if h.handle == handle {
            return refuse(
                HandleRule::BindingUnique,
                format!(
                    "{handle:?} has a live binding to another subject ({})",
                    h.subject
                ),
            );
        }
        return refuse(
            HandleRule::Confusable,
            format!(
                "{handle:?} looks like {:?}, which is bound to another subject ({})",
                h.handle, h.subject
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(h: &str, p: HandlePolicy) -> Option<HandleRule> {
        check_handle(h, p).err().map(|e| e.rule)
    }

    /// The five look-alikes of issue 12, each refused with its rule under
    /// both policies (or, for `alıce`, by its skeleton: see
    /// `dotless_i_is_refused_by_the_skeleton`).
    #[test]
    fn issue_12_look_alikes_are_refused_by_rule() {
        use HandlePolicy::*;
        assert_eq!(rule("Alice", Ascii), Some(HandleRule::Case));
        assert_eq!(rule("Alice", Unicode), Some(HandleRule::Case));
        assert_eq!(rule("\u{430}lice", Ascii), Some(HandleRule::Charset));
        assert_eq!(rule("\u{430}lice", Unicode), Some(HandleRule::MixedScript));
        assert_eq!(rule("alice\u{200B}", Ascii), Some(HandleRule::Format));
        assert_eq!(rule("alice\u{200B}", Unicode), Some(HandleRule::Format));
        assert_eq!(rule("\u{202E}ecila", Ascii), Some(HandleRule::Bidi));
        assert_eq!(rule("\u{202E}ecila", Unicode), Some(HandleRule::Bidi));
        assert_eq!(rule("al\u{131}ce", Ascii), Some(HandleRule::Charset));
        // Under `unicode`, dotless ı is a Latin letter: the handle passes
        // the policy and is refused by its skeleton at issue time.
        assert_eq!(rule("al\u{131}ce", Unicode), None);
    }

    #[test]
    fn dotless_i_is_refused_by_the_skeleton() {
        assert_eq!(skeleton("al\u{131}ce"), skeleton("alice"));
        assert_eq!(skeleton("Alice"), skeleton("alice"));
        assert_eq!(skeleton("\u{430}lice"), skeleton("alice"));
        assert_eq!(skeleton("alice\u{200B}"), skeleton("alice"));
        assert_eq!(skeleton("rnary"), skeleton("mary"));
        assert_eq!(skeleton("n0ra"), skeleton("nora"));
        assert_eq!(skeleton("caro1"), skeleton("carol"));
        assert_ne!(skeleton("erin"), skeleton("erln"));
        let alice = HeldBinding {
            handle: "alice".into(),
            subject: Hash32([1; 32]),
            expires_at: 0,
            revocation: None,
            freed: false,
        };
        let r = judge_issue(
            "al\u{131}ce",
            &Hash32([2; 32]),
            10,
            &[alice],
            &Reservation::default(),
        );
        assert_eq!(r.map_err(|e| e.rule), Err(HandleRule::Confusable));
    }

    #[test]
    fn good_handles_pass() {
        use HandlePolicy::*;
        for h in ["alice", "bob.smith", "user-00001", "a_b", "x", "0123"] {
            assert_eq!(rule(h, Ascii), None, "{h}");
            assert_eq!(rule(h, Unicode), None, "{h}");
        }
        // One script at a time, and the Latin + Han + Kana mix UTS #39
        // calls highly restrictive.
        for h in ["müller", "андрей", "αθηνά", "山田たろう", "tanaka太郎"] {
            assert_eq!(rule(h, Unicode), None, "{h}");
            assert_eq!(rule(h, Ascii), Some(HandleRule::Charset), "{h}");
        }
    }

    #[test]
    fn other_rules_name_themselves() {
        use HandlePolicy::*;
        assert_eq!(rule("", Ascii), Some(HandleRule::Length));
        assert_eq!(rule(&"a".repeat(65), Unicode), Some(HandleRule::Length));
        // "mü" with a combining diaeresis: not NFC.
        assert_eq!(rule("mu\u{308}ller", Unicode), Some(HandleRule::Nfc));
        assert_eq!(rule("stra\u{df}e", Unicode), Some(HandleRule::Case));
        assert_eq!(rule("a+b", Ascii), Some(HandleRule::Charset));
        assert_eq!(rule("a+b", Unicode), Some(HandleRule::Identifier));
        assert_eq!(rule("a\u{2665}", Unicode), Some(HandleRule::Identifier));
        assert_eq!(rule(".alice", Ascii), Some(HandleRule::Punctuation));
        assert_eq!(rule("alice-", Unicode), Some(HandleRule::Punctuation));
        assert_eq!(rule("a..b", Ascii), Some(HandleRule::Punctuation));
        assert_eq!(rule("a\u{200D}b", Unicode), Some(HandleRule::Format));
        assert_eq!(rule("a\u{7}b", Unicode), Some(HandleRule::Format));
        assert_eq!(rule("a\u{2067}b", Unicode), Some(HandleRule::Bidi));
        assert_eq!("unicode".parse(), Ok(HandlePolicy::Unicode));
        assert!("latin".parse::<HandlePolicy>().is_err());
    }

    fn held(subject: u8, revocation: Option<(RevocationReason, u64)>) -> HeldBinding {
        HeldBinding {
            handle: "carol".into(),
            subject: Hash32([subject; 32]),
            expires_at: 0,
            revocation,
            freed: false,
        }
    }

    #[test]
    fn one_live_binding_per_handle_and_revoked_handles_stay_reserved() {
        let none = Reservation::default();
        let (a, b) = (Hash32([1; 32]), Hash32([2; 32]));
        let judge = |s: &Hash32, h: &[HeldBinding], r: &Reservation| {
            judge_issue("carol", s, 1_000, h, r).map_err(|e| e.rule)
        };
        // Live: the holder may retry, anyone else is refused.
        assert_eq!(judge(&a, &[held(1, None)], &none), Ok(()));
        assert_eq!(
            judge(&b, &[held(1, None)], &none),
            Err(HandleRule::BindingUnique)
        );
        // Expired: free.
        let mut expired = held(1, None);
        expired.expires_at = 500;
        assert_eq!(judge(&b, &[expired], &none), Ok(()));
        // Account closed: reserved for everyone, the old holder too, and
        // no cooldown frees it.
        let closed = held(1, Some((RevocationReason::ACCOUNT_CLOSED, 10)));
        let short = Reservation {
            cooldown_ms: Some(1),
        };
        for s in [&a, &b] {
            for r in [&none, &short] {
                assert_eq!(
                    judge(s, std::slice::from_ref(&closed), r),
                    Err(HandleRule::Reserved)
                );
            }
        }
        // An operator freed it.
        let mut freed = closed.clone();
        freed.freed = true;
        assert_eq!(judge(&b, &[freed], &none), Ok(()));
        // Superseded: the holder may take it back; others wait for the
        // cooldown, if one is configured.
        let sup = held(1, Some((RevocationReason::SUPERSEDED, 10)));
        assert_eq!(judge(&a, std::slice::from_ref(&sup), &none), Ok(()));
        assert_eq!(
            judge(&b, std::slice::from_ref(&sup), &none),
            Err(HandleRule::Reserved)
        );
        assert_eq!(judge(&b, std::slice::from_ref(&sup), &short), Ok(()));
        let long = Reservation {
            cooldown_ms: Some(10_000),
        };
        assert_eq!(judge(&b, &[sup], &long), Err(HandleRule::Reserved));
    }
}

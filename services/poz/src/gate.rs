//! What every POZ server does with a request frame before looking anything
//! up (SPEC §17), sans I/O: decode it strictly, enforce the port contract,
//! answer CHALLENGE, and admit only requests with a fresh, sufficient proof
//! of work when the difficulty is above zero.
//!
//! The gate's replay guard is this process's. A proof is spent once per
//! fleet (SPEC §15, "Replay"): the gate hands the proof it admitted back
//! as a [`SpentProof`], which a gateway records in the fleet-wide guard
//! (Redis) before answering; gates of one process share one guard
//! ([`Gate::sharing_replay`]).

use crate::codec::Codec;
use crate::pow::{replay_key, replay_ttl_ms, Challenger, ReplayGuard, Seen};
use crate::wire::{
    MessageType, PowReason, PowRequired, Request, RequestPayload, Response, Status, SubmitSigned,
};
use std::sync::{Arc, Mutex};

/// The three POZ ports and their contracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// 7074: plaintext lookups.
    Plain,
    /// 7075: Noise NK lookups.
    NoiseQuery,
    /// 7076: Noise NK submissions.
    NoiseSubmit,
}

impl Port {
    pub fn number(self) -> u16 {
        match self {
            Port::Plain => 7074,
            Port::NoiseQuery => 7075,
            Port::NoiseSubmit => 7076,
        }
    }

    fn allows(self, t: MessageType) -> bool {
        match self {
            Port::Plain | Port::NoiseQuery => t.is_query(),
            Port::NoiseSubmit => t.is_submit(),
        }
    }
}

/// The gate's decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Look the request up and answer it.
    Admit(Request),
    /// Send this response and close.
    Respond(Response),
}

/// A proof of work the gate admitted and recorded in its own replay
/// guard. The fleet-wide guard must record it too, as new, before the
/// request is answered (SPEC §15, "Replay").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpentProof {
    /// What makes two proofs the same: [`crate::pow::replay_key`].
    pub key: [u8; 32],
    /// How long the fleet must remember it, in ms (at least 1):
    /// [`crate::pow::replay_ttl_ms`].
    pub ttl_ms: u64,
}

/// The gate's decision with the proof it spent, if any.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub admission: Admission,
    /// Set only with `Admission::Admit` of a request that needed a proof.
    pub spent: Option<SpentProof>,
}

/// Per-process gate state: the challenge secrets and the replay guard.
#[derive(Debug)]
pub struct Gate {
    pub challenger: Challenger,
    replay: Arc<Mutex<ReplayGuard>>,
    /// The least difficulty a SUBMIT_SIGNED kind 3 (a new record to host,
    /// SPEC §14.5) is admitted at, whatever the load: each hosted record
    /// costs the store room for good, so its proof is never free. 0: no
    /// floor (then the load's difficulty applies, as for any request).
    publish_difficulty: u8,
}

impl Gate {
    /// A gate with its own replay guard remembering at most
    /// `replay_capacity` proofs per challenge window.
    pub fn new(challenger: Challenger, replay_capacity: usize) -> Self {
        Gate {
            challenger,
            replay: Arc::new(Mutex::new(ReplayGuard::new(replay_capacity))),
            publish_difficulty: 0,
        }
    }

    /// Admits a new record to host (SUBMIT_SIGNED kind 3) only with a
    /// proof of at least `bits` leading zero bits (capped at the
    /// challenger's `cap`), even when the load asks for none (SPEC §15,
    /// "Publishing").
    pub fn with_publish_difficulty(mut self, bits: u8) -> Self {
        self.set_publish_difficulty(bits);
        self
    }

    /// [`Gate::with_publish_difficulty`] on a gate in place.
    pub fn set_publish_difficulty(&mut self, bits: u8) {
        self.publish_difficulty = bits.min(self.challenger.config.cap);
    }

    /// A gate for another port of the same process: the same challenger,
    /// and the same replay guard, so a proof spent on one port is spent
    /// on every port (SPEC §15, "Replay").
    pub fn sharing_replay(&self) -> Gate {
        Gate {
            challenger: self.challenger.clone(),
            replay: self.replay.clone(),
            publish_difficulty: self.publish_difficulty,
        }
    }

    fn pow_required_response(
        &self,
        id: u16,
        now: u64,
        difficulty: u8,
        reason: PowReason,
    ) -> Response {
        let p = PowRequired {
            reason,
            challenge: self.challenger.issue(now, difficulty),
        };
        Response {
            status: Status::POW_REQUIRED,
            request_id: id,
            payload: p.to_bytes(),
        }
    }

    /// The answer to a request whose proof the fleet-wide guard found
    /// already spent: POW_REQUIRED, reason `replayed`, with a fresh
    /// challenge at `difficulty`.
    pub fn replayed(&self, request_id: u16, now: u64, difficulty: u8) -> Response {
        self.pow_required_response(request_id, now, difficulty, PowReason::REPLAYED)
    }

    /// Decides on one whole request frame arriving on `port` at `now`,
    /// with `difficulty` the current difficulty (0: no proof needed).
    /// The proof of an admitted request is recorded in this process's
    /// replay guard; see [`Gate::decide`] for the fleet's.
    pub fn admit(&mut self, port: Port, frame: &[u8], now: u64, difficulty: u8) -> Admission {
        self.decide(port, frame, now, difficulty).admission
    }

    /// Like [`Gate::admit`], and returns the proof the admission spent, for
    /// the fleet-wide replay guard.
    pub fn decide(&mut self, port: Port, frame: &[u8], now: u64, difficulty: u8) -> Decision {
        match self.judge(port, frame, now, difficulty) {
            Ok((req, spent)) => Decision {
                admission: Admission::Admit(req),
                spent,
            },
            Err(r) => Decision {
                admission: Admission::Respond(r),
                spent: None,
            },
        }
    }

    fn judge(
        &mut self,
        port: Port,
        frame: &[u8],
        now: u64,
        difficulty: u8,
    ) -> Result<(Request, Option<SpentProof>), Response> {
        let req = Request::decode(frame).map_err(|e| e.response())?;
        let id = req.request_id;
        if !req.message_type.is_known() {
            return Err(Response::error(
                Status::BAD_REQUEST,
                id,
                0,
                &format!("unknown message type {:#04x}", req.message_type.0),
            ));
        }
        if !port.allows(req.message_type) {
            let msg = format!(
                "{} is not served on port {}",
                req.message_type,
                port.number()
            );
            return Err(Response::error(Status::WRONG_PORT, id, 0, &msg));
        }
        // Each type's payload rule (SPEC §14.4), before any proof is
        // looked at or spent: a malformed request costs no proof.
        let payload = match RequestPayload::decode(req.message_type, &req.payload) {
            Ok(p) => p,
            Err(e) => {
                return Err(Response::error(
                    Status::BAD_REQUEST,
                    id,
                    0,
                    &format!("payload: {e}"),
                ))
            }
        };
        let difficulty = match payload {
            RequestPayload::SubmitSigned(SubmitSigned::NewRecord { .. }) => {
                difficulty.max(self.publish_difficulty)
            }
            _ => difficulty,
        };
        if req.message_type == MessageType::CHALLENGE {
            let c = self.challenger.issue(now, difficulty);
            return Err(Response::ok(id, c.to_bytes()));
        }
        if difficulty == 0 {
            return Ok((req, None));
        }
        let Some(sol) = req.pow else {
            return Err(self.pow_required_response(id, now, difficulty, PowReason::REQUIRED));
        };
        let valid_until = self
            .challenger
            .check_until(&sol, now, difficulty)
            .map_err(|reason| self.pow_required_response(id, now, difficulty, reason))?;
        let window = now / self.challenger.config.window_ms.max(1);
        let seen = self
            .replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check_and_insert(&sol, window);
        match seen {
            Seen::Fresh => {
                let spent = SpentProof {
                    key: replay_key(&sol),
                    ttl_ms: replay_ttl_ms(valid_until, now),
                };
                Ok((req, Some(spent)))
            }
            Seen::Replayed => Err(self.replayed(id, now, difficulty)),
            // Refused before recording: the proof is not spent (SPEC §15).
            Seen::Full => Err(Response::error(
                Status::RATE_LIMITED,
                id,
                self.challenger.config.window_ms.min(u32::MAX as u64) as u32,
                "too many proofs of work this window",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pow::{solve, PowConfig, Secrets};
    use crate::wire::{Challenge, DomainQuery};

    fn gate() -> Gate {
        Gate::new(
            Challenger::new(PowConfig::default(), Secrets(vec![[9; 32]])),
            1000,
        )
    }

    fn master(id: u16) -> Request {
        Request::new(
            MessageType::MASTER,
            id,
            DomainQuery {
                domain: "a.example".into(),
            }
            .to_bytes(),
        )
    }

    fn status(a: &Admission) -> Status {
        match a {
            Admission::Respond(r) => r.status,
            Admission::Admit(_) => Status::OK,
        }
    }

    #[test]
    fn port_contracts() {
        let mut g = gate();
        let submit = Request::new(MessageType::SUBMIT_STATUS, 1, vec![0; 16]).to_bytes();
        assert_eq!(
            status(&g.admit(Port::Plain, &submit, 0, 0)),
            Status::WRONG_PORT
        );
        assert_eq!(
            status(&g.admit(Port::NoiseQuery, &submit, 0, 0)),
            Status::WRONG_PORT
        );
        assert_eq!(
            status(&g.admit(Port::NoiseSubmit, &master(2).to_bytes(), 0, 0)),
            Status::WRONG_PORT
        );
        assert!(matches!(
            g.admit(Port::NoiseSubmit, &submit, 0, 0),
            Admission::Admit(_)
        ));
        let unknown = Request::new(MessageType(0x7F), 3, vec![]).to_bytes();
        assert_eq!(
            status(&g.admit(Port::Plain, &unknown, 0, 0)),
            Status::BAD_REQUEST
        );
    }

    #[test]
    fn pow_flow_and_replay() {
        let mut g = gate();
        let now = 10_000_000;
        let a = g.admit(Port::Plain, &master(5).to_bytes(), now, 8);
        let Admission::Respond(r) = a else {
            panic!("expected POW_REQUIRED")
        };
        assert_eq!((r.status, r.request_id), (Status::POW_REQUIRED, 5));
        let p = PowRequired::from_bytes(&r.payload).unwrap();
        assert_eq!(p.reason, PowReason::REQUIRED);
        let Challenge {
            challenge,
            difficulty,
            ..
        } = p.challenge;
        let sol = solve(&challenge, difficulty, now, 0, 1 << 22).unwrap();
        let mut req = master(6);
        req.pow = Some(sol);
        assert!(matches!(
            g.admit(Port::Plain, &req.to_bytes(), now + 10, 8),
            Admission::Admit(_)
        ));
        let Admission::Respond(again) = g.admit(Port::Plain, &req.to_bytes(), now + 20, 8) else {
            panic!()
        };
        assert_eq!(
            PowRequired::from_bytes(&again.payload).unwrap().reason,
            PowReason::REPLAYED
        );
    }

    /// A new record to host needs a proof at the publish floor even when
    /// the load asks for none; other requests do not.
    #[test]
    fn publishing_has_a_difficulty_floor() {
        let mut g = gate().with_publish_difficulty(8);
        let rec = crate::sample::provider().unwrap();
        let publish = Request::new(
            MessageType::SUBMIT_SIGNED,
            9,
            SubmitSigned::NewRecord {
                record: rec.to_bytes(),
            }
            .to_bytes(),
        );
        let status_query = Request::new(MessageType::SUBMIT_STATUS, 10, vec![0; 16]);
        let now = 10_000_000;
        assert!(matches!(
            g.admit(Port::NoiseSubmit, &status_query.to_bytes(), now, 0),
            Admission::Admit(_)
        ));
        let r = respond(g.admit(Port::NoiseSubmit, &publish.to_bytes(), now, 0));
        assert_eq!((r.status, r.request_id), (Status::POW_REQUIRED, 9));
        let p = PowRequired::from_bytes(&r.payload).unwrap();
        assert_eq!(p.challenge.difficulty, 8);
        let sol = solve(&p.challenge.challenge, 8, now, 0, 1 << 22).unwrap();
        let mut solved = publish.clone();
        solved.pow = Some(sol);
        assert!(matches!(
            g.admit(Port::NoiseSubmit, &solved.to_bytes(), now + 1, 0),
            Admission::Admit(_)
        ));
    }

    fn respond(a: Admission) -> Response {
        match a {
            Admission::Respond(r) => r,
            Admission::Admit(r) => panic!("admitted {r:?}"),
        }
    }

    /// Issue 12 §6: the exact frames, through the gate (what a Noise port
    /// does with a decrypted request, and a plain port with a frame whose
    /// sender stopped).
    #[test]
    fn frame_errors_echo_the_id_whenever_it_arrived() {
        let mut g = gate();
        let mut v1 = vec![0x01, 0x01, 0x12, 0x34, 0x00, 0x00, 0x0d, 12];
        v1.extend_from_slice(b"demo.example");
        let mut with_pow = vec![0x00, 0x01, 0x43, 0x21, 0x01];
        with_pow.extend_from_slice(&[0; 32]);
        with_pow.extend_from_slice(&[0xff, 0xff]);
        let cases: [(&[u8], Status, u16); 6] = [
            (&v1, Status::UNSUPPORTED_VERSION, 0x1234),
            (&[0x01], Status::UNSUPPORTED_VERSION, 0),
            (
                &[0x00, 0x01, 0x43, 0x21, 0x00, 0xff, 0xff],
                Status::TOO_LARGE,
                0x4321,
            ),
            (&with_pow, Status::TOO_LARGE, 0x4321),
            (&[0x00, 0x01, 0x43, 0x21, 0x07], Status::BAD_REQUEST, 0x4321),
            (
                &[0x00, 0x13, 0x07, 0x07, 0x00, 0x00, 0x01, 0x00],
                Status::BAD_REQUEST,
                0x0707,
            ),
        ];
        for port in [Port::Plain, Port::NoiseQuery, Port::NoiseSubmit] {
            for (frame, status, id) in cases {
                // CHALLENGE is a query: on 7076 the port contract answers first.
                let status = if port == Port::NoiseSubmit && frame.starts_with(&[0x00, 0x13]) {
                    Status::WRONG_PORT
                } else {
                    status
                };
                let r = respond(g.admit(port, frame, 0, 12));
                assert_eq!(
                    (r.status, r.request_id),
                    (status, id),
                    "{frame:02x?} on {port:?}"
                );
            }
        }
    }

    #[test]
    fn every_payload_rule_is_enforced_before_the_proof() {
        let mut g = gate();
        // MASTER with a trailing byte: BAD_REQUEST, not POW_REQUIRED.
        let mut p = DomainQuery {
            domain: "a.example".into(),
        }
        .to_bytes();
        p.push(0);
        let r = respond(g.admit(
            Port::Plain,
            &Request::new(MessageType::MASTER, 4, p).to_bytes(),
            0,
            12,
        ));
        assert_eq!((r.status, r.request_id), (Status::BAD_REQUEST, 4));
        let d = crate::wire::ErrorDetail::from_bytes(&r.payload).unwrap();
        assert!(d.message.contains("master.payload"), "{}", d.message);
        // SUBMIT_STATUS with 15 bytes.
        let r = respond(g.admit(
            Port::NoiseSubmit,
            &Request::new(MessageType::SUBMIT_STATUS, 5, vec![0; 15]).to_bytes(),
            0,
            0,
        ));
        assert_eq!((r.status, r.request_id), (Status::BAD_REQUEST, 5));
    }

    fn solved(g: &Gate, now: u64, difficulty: u8, start: u64) -> crate::wire::PowSolution {
        let ch = g.challenger.issue(now, difficulty);
        solve(&ch.challenge, difficulty, now, start, 1 << 22).unwrap()
    }

    #[test]
    fn an_admitted_proof_is_handed_out_once_for_the_fleet() {
        let mut g = gate();
        let now = 10_000_000;
        let sol = solved(&g, now, 8, 0);
        let mut req = master(6);
        req.pow = Some(sol);
        let d = g.decide(Port::Plain, &req.to_bytes(), now, 8);
        assert!(matches!(d.admission, Admission::Admit(_)));
        let spent = d.spent.unwrap();
        assert_eq!(spent.key, crate::pow::replay_key(&sol));
        let until = g.challenger.check_until(&sol, now, 8).unwrap();
        assert_eq!(spent.ttl_ms, crate::pow::replay_ttl_ms(until, now));
        // Refused: no proof spent.
        let d = g.decide(Port::Plain, &req.to_bytes(), now, 8);
        assert_eq!(d.spent, None);
        // No proof needed: none spent.
        let d = g.decide(Port::Plain, &master(7).to_bytes(), now, 0);
        assert!(matches!(d.admission, Admission::Admit(_)));
        assert_eq!(d.spent, None);
        // The fleet-wide guard's answer when it had seen it.
        let r = g.replayed(6, now, 8);
        assert_eq!((r.status, r.request_id), (Status::POW_REQUIRED, 6));
        let p = PowRequired::from_bytes(&r.payload).unwrap();
        assert_eq!((p.reason, p.challenge.difficulty), (PowReason::REPLAYED, 8));
    }

    /// pozd's three ports: a proof spent on 7074 is refused on 7076.
    #[test]
    fn gates_sharing_a_replay_guard_spend_a_proof_once() {
        let mut plain = gate();
        let mut submit = plain.sharing_replay();
        let mut other = gate();
        let now = 20_000_000;
        let sol = solved(&plain, now, 8, 0);
        let mut lookup = master(1);
        lookup.pow = Some(sol);
        assert!(matches!(
            plain.admit(Port::Plain, &lookup.to_bytes(), now, 8),
            Admission::Admit(_)
        ));
        let mut status = Request::new(MessageType::SUBMIT_STATUS, 2, vec![0; 16]);
        status.pow = Some(sol);
        let r = respond(submit.admit(Port::NoiseSubmit, &status.to_bytes(), now + 5, 8));
        assert_eq!(r.status, Status::POW_REQUIRED);
        assert_eq!(
            PowRequired::from_bytes(&r.payload).unwrap().reason,
            PowReason::REPLAYED
        );
        // A gate with its own guard does not know it (hence Redis).
        assert!(matches!(
            other.admit(Port::NoiseSubmit, &status.to_bytes(), now + 5, 8),
            Admission::Admit(_)
        ));
    }

    /// RATE_LIMITED (the guard full) does not consume the proof: the same
    /// proof is admitted once the guard has room, while it is valid.
    #[test]
    fn rate_limited_does_not_consume_a_proof() {
        let mut g = Gate::new(
            Challenger::new(PowConfig::default(), Secrets(vec![[9; 32]])),
            1,
        );
        let w = g.challenger.config.window_ms;
        let now = 500 * w;
        let first = solved(&g, now, 4, 0);
        let second = solved(&g, now, 4, first.nonce + 1);
        let with = |id, sol| {
            let mut r = master(id);
            r.pow = Some(sol);
            r.to_bytes()
        };
        assert!(matches!(
            g.admit(Port::Plain, &with(1, first), now, 4),
            Admission::Admit(_)
        ));
        let r = respond(g.admit(Port::Plain, &with(2, second), now + 1, 4));
        assert_eq!((r.status, r.request_id), (Status::RATE_LIMITED, 2));
        // The next window: room again, and the proof is still valid.
        let later = now + w;
        assert_eq!(g.challenger.check(&second, later, 4), Ok(()));
        assert!(matches!(
            g.admit(Port::Plain, &with(3, second), later, 4),
            Admission::Admit(_)
        ));
    }

    #[test]
    fn challenge_is_answered_by_the_gate() {
        let mut g = gate();
        let c = Request::new(MessageType::CHALLENGE, 9, vec![]).to_bytes();
        let Admission::Respond(r) = g.admit(Port::NoiseQuery, &c, 0, 12) else {
            panic!()
        };
        assert_eq!(r.status, Status::OK);
        assert_eq!(Challenge::from_bytes(&r.payload).unwrap().difficulty, 12);
    }
}

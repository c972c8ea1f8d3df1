//! What every POZ server does with a request frame before looking anything
//! up (SPEC §17), sans I/O: decode it strictly, enforce the port contract,
//! answer CHALLENGE, and admit only requests with a fresh, sufficient proof
//! of work when the difficulty is above zero.

use crate::codec::Codec;
use crate::pow::{Challenger, ReplayGuard, Seen};
use crate::wire::{MessageType, PowReason, PowRequired, Request, Response, Status};

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

/// Per-process gate state: the challenge secrets and the replay guard.
#[derive(Debug)]
pub struct Gate {
    pub challenger: Challenger,
    replay: ReplayGuard,
}

impl Gate {
    pub fn new(challenger: Challenger, replay_capacity: usize) -> Self {
        Gate {
            challenger,
            replay: ReplayGuard::new(replay_capacity),
        }
    }

    fn pow_required(&self, id: u16, now: u64, difficulty: u8, reason: PowReason) -> Admission {
        let p = PowRequired {
            reason,
            challenge: self.challenger.issue(now, difficulty),
        };
        Admission::Respond(Response {
            status: Status::POW_REQUIRED,
            request_id: id,
            payload: p.to_bytes(),
        })
    }

    /// Decides on one whole request frame arriving on `port` at `now`,
    /// with `difficulty` the current difficulty (0: no proof needed).
    pub fn admit(&mut self, port: Port, frame: &[u8], now: u64, difficulty: u8) -> Admission {
        let req = match Request::decode(frame) {
            Ok(r) => r,
            Err(e) => {
                return Admission::Respond(Response::error(
                    e.status(),
                    e.request_id(),
                    0,
                    &e.to_string(),
                ))
            }
        };
        let id = req.request_id;
        if !req.message_type.is_known() {
            return Admission::Respond(Response::error(
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
            return Admission::Respond(Response::error(Status::WRONG_PORT, id, 0, &msg));
        }
        if req.message_type == MessageType::CHALLENGE {
            let c = self.challenger.issue(now, difficulty);
            return Admission::Respond(Response::ok(id, c.to_bytes()));
        }
        if difficulty == 0 {
            return Admission::Admit(req);
        }
        let Some(sol) = req.pow else {
            return self.pow_required(id, now, difficulty, PowReason::REQUIRED);
        };
        if let Err(reason) = self.challenger.check(&sol, now, difficulty) {
            return self.pow_required(id, now, difficulty, reason);
        }
        let window = now / self.challenger.config.window_ms.max(1);
        match self.replay.check_and_insert(&sol, window) {
            Seen::Fresh => Admission::Admit(req),
            Seen::Replayed => self.pow_required(id, now, difficulty, PowReason::REPLAYED),
            Seen::Full => Admission::Respond(Response::error(
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

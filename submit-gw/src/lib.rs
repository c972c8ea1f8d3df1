//! The POZ submit gateway (`poz-submit-gw`): port 7076, Noise NK only,
//! with the same connection discipline and proof of work as the query
//! gateway (`poz_query_gw::edge`). A submission is acknowledged only after
//! the store has committed it.
#![forbid(unsafe_code)]

pub mod signed;

use poz::wire::{MessageType, Request, Response, Status};
use poz_query_gw::edge::Answer;
pub use signed::SignedSubmissions;

/// What 7076 answers.
#[derive(Clone)]
pub struct Submissions {
    pub signed: SignedSubmissions,
}

impl Answer for Submissions {
    async fn answer(&self, req: &Request) -> Response {
        match req.message_type {
            MessageType::SUBMIT_SIGNED => self.signed.answer(req).await,
            MessageType::SUBMIT_REQUEST | MessageType::SUBMIT_STATUS => Response::error(
                Status::UNAVAILABLE,
                req.request_id,
                0,
                "this provider does not take binding requests over POZ yet",
            ),
            other => Response::error(
                Status::WRONG_PORT,
                req.request_id,
                0,
                &format!("{other} is not a submission"),
            ),
        }
    }
}

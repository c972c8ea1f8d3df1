//! The POZ submit gateway (`poz-submit-gw`): port 7076, Noise NK only,
//! behind the POZ edge (`poz_edge`: the query gateway's connection
//! discipline and proof of work). A submission is acknowledged only after
//! the store has committed it. [`serve`] runs one from its [`Config`].
#![forbid(unsafe_code)]

pub mod hosted;
pub mod requests;
pub mod serve;
pub mod signed;

pub use hosted::{AddressQuota, Hosting};
use poz::wire::{MessageType, Request, Response, Status};
use poz_edge::Answer;
pub use requests::{BindingRequests, Policy};
pub use serve::{edge, run, serve, Config, Listeners, ServeError};
pub use signed::SignedSubmissions;

/// What 7076 answers.
#[derive(Clone)]
pub struct Submissions {
    pub signed: SignedSubmissions,
    /// Binding requests; None: this provider takes none over POZ.
    pub requests: Option<BindingRequests>,
    /// New records (SUBMIT_SIGNED kind 3); None: this provider hosts none.
    pub hosting: Option<Hosting>,
}

impl Answer for Submissions {
    async fn answer(&self, req: &Request, from: std::net::IpAddr) -> Response {
        match req.message_type {
            MessageType::SUBMIT_SIGNED => {
                self.signed.answer(req, from, self.hosting.as_ref()).await
            }
            MessageType::SUBMIT_REQUEST | MessageType::SUBMIT_STATUS => match &self.requests {
                Some(r) if req.message_type == MessageType::SUBMIT_REQUEST => r.request(req).await,
                Some(r) => r.status(req).await,
                None => Response::error(
                    Status::UNAUTHORIZED,
                    req.request_id,
                    0,
                    "this provider takes no binding requests over POZ",
                ),
            },
            other => Response::error(
                Status::WRONG_PORT,
                req.request_id,
                0,
                &format!("{other} is not a submission"),
            ),
        }
    }
}

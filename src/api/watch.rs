//! `WatchService`: an organization's changes as a stream.

use std::pin::Pin;

use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{caller, timestamp};
use crate::{
    domain::change::watch::{self, Watched},
    proto::v1::{self as pb, watch_service_server::WatchService},
    state::AppState,
};

/// The WatchService handlers.
#[derive(Clone, Debug)]
pub struct WatchApi {
    state: AppState,
}

impl WatchApi {
    /// Handlers over shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn watched_pb(w: Watched) -> pb::WatchResponse {
    pb::WatchResponse {
        revision: w.revision,
        committed_at: Some(timestamp(w.committed_at_ms)),
        events: w
            .events
            .into_iter()
            .map(|e| pb::ChangeEvent {
                action: e.action,
                target_type: e.target_type,
                target_id: e.target_id,
            })
            .collect(),
    }
}

/// A stream of changes, ending with the error that stopped it, if any.
type Changes = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl WatchService for WatchApi {
    type WatchStream = Changes;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let mut watch = watch::start(
            &self.state,
            &caller,
            &req.organization_id,
            req.after_revision,
        )
        .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = watch.next() => next,
                    () = tx.closed() => return,
                };
                match next {
                    Ok(changes) => {
                        for change in changes {
                            if tx.send(Ok(watched_pb(change))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(err) => {
                        let _ = tx.send(Err(Status::from(err))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

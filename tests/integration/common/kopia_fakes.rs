//! Kopia-protocol servers that misbehave on purpose, over a tier's directory: they answer like
//! our catalog server (the library's `SessionAnswers`) except where their [`Fault`] says.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use klio_api::upstream::kopia::proto::kopia_repository_server::{KopiaRepository, KopiaRepositoryServer};
use klio_api::upstream::kopia::proto::{
    error_response, session_request, session_response, ErrorResponse, GetContentResponse, SessionRequest,
    SessionResponse,
};
use klio_api::upstream::kopia::server::repository::{DirRepository, StoredManifest};
use klio_api::upstream::kopia::server::{serve, Acl, Backend, RequestCounts, SessionAnswers};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::{ServeParts, Up};

/// How a fake server misbehaves.
#[derive(Clone)]
pub enum Fault {
    /// Every session ends at once with this gRPC status.
    Refuse(tonic::Code, &'static str),
    /// FindManifests is answered with this error.
    FindError(error_response::Code, &'static str),
    /// FindManifests is answered with a GetContent answer.
    WrongAnswer,
    /// The session opens; no request is ever answered.
    Silent,
    /// Every answer is preceded by one for a request nobody sent.
    StrayIds,
    /// After this many answered requests, the server ends the stream (requests still pending
    /// lose their answers).
    EndAfter(usize),
    /// FindManifests answers wait until the flag is set.
    HoldFinds(&'static AtomicBool),
}

/// A tier served by a fake server with `fault`, over the tier's directory.
pub fn faulty(fault: Fault) -> Up {
    faulty_over(|dir| Arc::new(DirRepository::new(dir, 4 << 20, Duration::from_millis(100)).unwrap()), fault)
}

/// A tier served by a fake server with `fault`, over a repository of the test's making.
pub fn faulty_over(make: fn(&Path) -> Arc<dyn Backend>, fault: Fault) -> Up {
    Up::custom(move |parts: ServeParts| {
        let fault = fault.clone();
        Box::pin(async move {
            let svc =
                KopiaRepositoryServer::new(Faulty { repo: make(&parts.dir), fault, counts: parts.counts.clone() });
            let _ = serve(parts.listener, parts.acceptor, svc, parts.stop).await;
        })
    })
}

struct Faulty {
    repo: Arc<dyn Backend>,
    fault: Fault,
    counts: Arc<RequestCounts>,
}

fn is_find(req: &SessionRequest) -> bool {
    matches!(req.request, Some(session_request::Request::FindManifests(_)))
}

#[tonic::async_trait]
impl KopiaRepository for Faulty {
    type SessionStream = tokio_stream::wrappers::ReceiverStream<Result<SessionResponse, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if let Fault::Refuse(code, message) = &self.fault {
            return Err(Status::new(*code, *message));
        }
        self.counts.sessions.fetch_add(1, Ordering::Relaxed);
        let mut inbound = request.into_inner();
        let init = inbound.message().await?.ok_or_else(|| Status::unknown("no initialization request"))?;
        let answers = SessionAnswers::new(
            self.repo.clone(),
            Acl::Readers(vec!["snapshot_reader@klio".into()]),
            self.counts.clone(),
            "snapshot_reader",
            "klio",
        );
        let (tx, rx) = mpsc::channel(64);
        let _ = tx.send(Ok(answers.initialized(init.request_id))).await;
        let fault = self.fault.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            while let Ok(Some(req)) = inbound.message().await {
                let id = req.request_id;
                let out = match &fault {
                    Fault::Silent => continue,
                    Fault::EndAfter(n) if answered >= *n => return,
                    Fault::FindError(code, message) if is_find(&req) => vec![SessionResponse {
                        request_id: id,
                        has_more: false,
                        response: Some(session_response::Response::Error(ErrorResponse {
                            code: *code as i32,
                            message: message.to_string(),
                        })),
                    }],
                    Fault::WrongAnswer if is_find(&req) => vec![SessionResponse {
                        request_id: id,
                        has_more: false,
                        response: Some(session_response::Response::GetContent(GetContentResponse {
                            data: vec![1].into(),
                        })),
                    }],
                    Fault::HoldFinds(flag) if is_find(&req) => {
                        for _ in 0..1000 {
                            if flag.load(Ordering::SeqCst) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        answers.answer(req)
                    }
                    _ => answers.answer(req),
                };
                for a in out {
                    if matches!(fault, Fault::StrayIds) {
                        let stray = SessionResponse { request_id: a.request_id + 1_000_000, ..a.clone() };
                        if tx.send(Ok(stray)).await.is_err() {
                            return;
                        }
                    }
                    if tx.send(Ok(a)).await.is_err() {
                        return;
                    }
                }
                answered += 1;
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// A repository of the test's making: a directory's, with its manifests changed by `change`.
pub struct Changed {
    pub inner: DirRepository,
    pub change: fn(Vec<Arc<StoredManifest>>) -> Vec<Arc<StoredManifest>>,
}

impl Changed {
    pub fn over(dir: &Path, change: fn(Vec<Arc<StoredManifest>>) -> Vec<Arc<StoredManifest>>) -> Arc<dyn Backend> {
        Arc::new(Self { inner: DirRepository::new(dir, 4 << 20, Duration::from_millis(100)).unwrap(), change })
    }
}

impl Backend for Changed {
    fn manifests(&self) -> Vec<Arc<StoredManifest>> {
        (self.change)(self.inner.manifests())
    }

    fn manifest(&self, id: &klio_api::upstream::kopia::ids::ManifestId) -> Option<Arc<StoredManifest>> {
        self.manifests().into_iter().find(|m| m.id == *id)
    }

    fn content(&self, id: &klio_api::upstream::kopia::ids::ContentId) -> Option<bytes::Bytes> {
        self.inner.content(id)
    }
}

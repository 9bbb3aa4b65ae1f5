//! The session BuildKit calls back into: gRPC Health (without it the session is dropped after about
//! a second) and `moby.upload.v1.Upload/Pull`, which streams the build context tar from disk.

use std::{
    collections::HashMap,
    io,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bollard_buildkit_proto::{
    health::{
        HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
        health_check_response::ServingStatus,
        health_server::{Health, HealthServer},
    },
    moby::upload::v1::{
        BytesMessage,
        upload_server::{Upload, UploadServer},
    },
};
use futures::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::oneshot,
    task::JoinHandle,
};
use tokio_util::io::ReaderStream;
use tonic::{
    Request, Response, Status, Streaming, server::NamedService, transport::server::Connected,
};
use tracing::{debug, warn};

/// BuildKit's HTTP source copies whatever chunk size we send; 32 KiB keeps memory flat for big contexts.
const UPLOAD_CHUNK: usize = 32 * 1024;
/// How long a finished build waits for BuildKit to let go of the session after our GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The services one build's session offers.
pub(super) struct Services {
    /// `urlpath` (`/<id>`) to the tar served under it.
    uploads: Arc<HashMap<String, PathBuf>>,
}

impl Services {
    pub(super) fn new(uploads: HashMap<String, PathBuf>) -> Self {
        Self {
            uploads: Arc::new(uploads),
        }
    }

    /// Full method names announced to BuildKit; it only calls what is announced.
    pub(super) fn methods() -> Vec<String> {
        vec![
            format!("/{}/Check", HealthServer::<HealthService>::NAME),
            format!("/{}/Pull", UploadServer::<UploadService>::NAME),
        ]
    }

    /// Serves the session on `io` (one connection on which BuildKit is the HTTP/2 client) until
    /// [`SessionHandle::close`], the handle is dropped, or the peer goes away.
    pub(super) fn serve<IO>(self, io: IO) -> SessionHandle
    where
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    {
        let closed = Arc::new(AtomicBool::new(false));
        let io = Tracked {
            inner: io,
            closed: Arc::clone(&closed),
        };
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let uploads = self.uploads;
        // The incoming stream must not end: tonic stops waiting for the connection once it does,
        // and a shutdown signal would then no longer reach it.
        let incoming =
            futures::stream::iter([Ok::<_, io::Error>(io)]).chain(futures::stream::pending());
        let task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(HealthServer::new(HealthService))
                .add_service(UploadServer::new(UploadService { uploads }))
                // A dropped sender counts as the signal too, so a cancelled build closes the session.
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = result {
                warn!(error = %super::error_chain(&e), "session server failed");
            }
        });
        SessionHandle {
            task,
            shutdown: Some(shutdown),
            closed,
        }
    }
}

/// The running session server. Dropping it shuts the session down too, so a cancelled build
/// leaves no connection behind.
pub(super) struct SessionHandle {
    task: JoinHandle<()>,
    shutdown: Option<oneshot::Sender<()>>,
    closed: Arc<AtomicBool>,
}

impl SessionHandle {
    /// Whether the session connection has gone away (BuildKit can no longer fetch the context).
    pub(super) fn has_ended(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Says goodbye (HTTP/2 GOAWAY) and waits briefly for the connection to close, so BuildKit
    /// drops the session now rather than when it notices.
    pub(super) async fn close(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if tokio::time::timeout(CLOSE_GRACE, &mut self.task)
            .await
            .is_err()
        {
            // The connection task is tonic's own and finishes when BuildKit hangs up.
            debug!("session still open after {CLOSE_GRACE:?}; leaving it to close on its own");
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        // A dropped sender is the shutdown signal too; tonic then sends GOAWAY and the
        // connection closes as soon as no call is in flight.
        self.shutdown.take();
    }
}

/// Marks the session closed when hyper drops the connection (EOF, error or shutdown).
struct Tracked<IO> {
    inner: IO,
    closed: Arc<AtomicBool>,
}

impl<IO> Drop for Tracked<IO> {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        debug!("session connection closed");
    }
}

impl<IO: Connected> Connected for Tracked<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

struct HealthService;

#[tonic::async_trait]
impl Health for HealthService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("health list is not served"))
    }

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("health watch is not served"))
    }
}

struct UploadService {
    uploads: Arc<HashMap<String, PathBuf>>,
}

#[tonic::async_trait]
impl Upload for UploadService {
    type PullStream = Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send>>;

    async fn pull(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let urlpath = request
            .metadata()
            .get("urlpath")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(path) = self.uploads.get(urlpath) else {
            warn!(urlpath, "BuildKit asked for an unknown upload");
            return Err(Status::not_found(format!("no upload at {urlpath:?}")));
        };
        // Opened per pull: BuildKit may fetch the context more than once (retries, cache checks).
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Status::internal(format!("opening the build context: {e}")))?;
        debug!(urlpath, path = %path.display(), "serving the build context");
        let chunks = ReaderStream::with_capacity(file, UPLOAD_CHUNK).map(|chunk| match chunk {
            Ok(data) => Ok(BytesMessage {
                data: data.to_vec(),
            }),
            Err(e) => Err(Status::internal(format!("reading the build context: {e}"))),
        });
        Ok(Response::new(Box::pin(chunks)))
    }
}

//! Byte pipes to BuildKit: the engine's HTTP-upgraded `/grpc` and `/session` connections, plain
//! TCP / unix channels to a standalone buildkitd, and the `Control/Session` stream adapted into a
//! connection our session server can speak HTTP/2 over.

use std::{
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bollard_buildkit_proto::moby::buildkit::v1::{BytesMessage, control_client::ControlClient};
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf},
    net::UnixStream,
};
use tokio_util::io::{ReaderStream, StreamReader};
use tonic::{
    codegen::Service,
    metadata::{AsciiMetadataValue, MetadataKey},
    transport::{Channel, Endpoint, Uri, server::Connected},
};
use tracing::debug;

use super::{BuildError, BuildkitAddr, error_chain};

/// Covers the socket connect plus the HTTP upgrade; BuildKit answers both in milliseconds when up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Above grpc-go's default keepalive enforcement minimum (5 min): pinging more often gets the
/// connection closed with `too_many_pings` during long quiet RUN steps.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(360);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// An upgrade response is a status line and a few headers; anything longer is not BuildKit.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Chunk size of session bytes sent as `BytesMessage`s: well under gRPC's 4 MiB default limit.
const SESSION_CHUNK: usize = 32 * 1024;

/// The Control API channel for `addr`; every failure is `Unavailable` (retry later).
pub(super) async fn connect(addr: &BuildkitAddr) -> Result<Channel, BuildError> {
    let unavailable = |e: tonic::transport::Error| {
        BuildError::Unavailable(format!("connecting to {addr}: {}", error_chain(&e)))
    };
    let connecting = async {
        match addr {
            BuildkitAddr::DockerEngine(socket) => endpoint("http://buildkit.invalid")?
                .connect_with_connector(EngineGrpcConnector {
                    socket: socket.clone(),
                })
                .await
                .map_err(unavailable),
            BuildkitAddr::Unix(socket) => endpoint("http://buildkit.invalid")?
                .connect_with_connector(UnixConnector {
                    socket: socket.clone(),
                })
                .await
                .map_err(unavailable),
            BuildkitAddr::Tcp(host_port) => endpoint(&format!("http://{host_port}"))?
                .connect()
                .await
                .map_err(unavailable),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(result) => result,
        Err(_) => Err(BuildError::Unavailable(format!(
            "connecting to {addr}: timed out after {CONNECT_TIMEOUT:?}"
        ))),
    }
}

fn endpoint(uri: &str) -> Result<Endpoint, BuildError> {
    Ok(Endpoint::from_shared(uri.to_owned())
        .map_err(|e| BuildError::Unavailable(format!("invalid BuildKit endpoint {uri}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT))
}

/// Opens `POST /grpc` upgraded to h2c on the engine socket for each connection tonic makes.
#[derive(Clone)]
struct EngineGrpcConnector {
    socket: PathBuf,
}

impl Service<Uri> for EngineGrpcConnector {
    type Response = TokioIo<Upgraded>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let socket = self.socket.clone();
        Box::pin(async move { upgrade(&socket, "/grpc", &[]).await.map(TokioIo::new) })
    }
}

#[derive(Clone)]
struct UnixConnector {
    socket: PathBuf,
}

impl Service<Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let socket = self.socket.clone();
        Box::pin(async move {
            UnixStream::connect(&socket)
                .await
                .map(TokioIo::new)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.display())))
        })
    }
}

/// The engine's `/session` endpoint: after the upgrade the daemon is the gRPC client and we serve.
pub(super) async fn docker_session(
    socket: &Path,
    session_id: &str,
    methods: &[String],
) -> Result<Upgraded, BuildError> {
    let mut headers = vec![
        ("X-Docker-Expose-Session-Uuid", session_id.to_owned()),
        ("X-Docker-Expose-Session-Name", "slipway".to_owned()),
        // The shared key only scopes FileSync caches, which we do not use.
        ("X-Docker-Expose-Session-Sharedkey", session_id.to_owned()),
    ];
    headers.extend(
        methods
            .iter()
            .map(|m| ("X-Docker-Expose-Session-Grpc-Method", m.clone())),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, upgrade(socket, "/session", &headers)).await {
        Ok(Ok(io)) => Ok(io),
        Ok(Err(e)) => Err(BuildError::Unavailable(format!(
            "opening a BuildKit session on {}: {e}",
            socket.display()
        ))),
        Err(_) => Err(BuildError::Unavailable(format!(
            "opening a BuildKit session on {}: timed out after {CONNECT_TIMEOUT:?}",
            socket.display()
        ))),
    }
}

/// Sends `POST <path>` asking for an h2c upgrade and returns the connection after the `101`.
async fn upgrade(socket: &Path, path: &str, headers: &[(&str, String)]) -> io::Result<Upgraded> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: slipway\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
    );
    for (name, value) in headers {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;

    let mut buf = BytesMut::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("POST {path}: response head too large"),
            ));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("POST {path}: connection closed before a response"),
            ));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "101" {
        // The engine explains refusals in a short JSON body; it is worth a few more milliseconds.
        let mut body = buf.split_off(head_end);
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read_buf(&mut body)).await;
        let body = String::from_utf8_lossy(&body[..body.len().min(512)])
            .trim()
            .to_owned();
        return Err(io::Error::other(format!(
            "POST {path}: expected 101 Switching Protocols, got {status_line:?} {body}"
        )));
    }
    // HTTP/2 bytes often arrive in the same read as the 101 headers: replay them first.
    let prefix = buf.split_off(head_end).freeze();
    debug!(path, replayed = prefix.len(), "upgraded to h2c");
    Ok(Upgraded { prefix, stream })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An upgraded engine connection: bytes read past the response head come first, then the socket.
pub(super) struct Upgraded {
    prefix: Bytes,
    stream: UnixStream,
}

impl Connected for Upgraded {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

type IncomingBytes = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The `Control/Session` bidi stream seen as a connection: request messages carry what we write,
/// response messages carry what we read (buildkit's `grpchijack`, from our side).
pub(super) struct SessionStream {
    read: StreamReader<IncomingBytes, Bytes>,
    /// Its peer half is drained into the request stream; dropping it ends the request stream,
    /// which closes the session in buildkitd.
    write: DuplexStream,
}

impl Connected for SessionStream {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SessionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().write).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_shutdown(cx)
    }
}

/// Opens `Control/Session` on a standalone buildkitd. The `x-docker-expose-session-*` metadata is
/// what buildkitd's session manager reads (the same names as the engine's HTTP headers, lowercased).
pub(super) async fn control_session(
    mut control: ControlClient<Channel>,
    session_id: &str,
    methods: &[String],
) -> Result<SessionStream, BuildError> {
    let (write, outgoing) = tokio::io::duplex(2 * SESSION_CHUNK);
    let outgoing = ReaderStream::with_capacity(outgoing, SESSION_CHUNK)
        // A read error on an in-memory pipe only means our side is gone: end the stream.
        .scan((), |(), chunk| futures::future::ready(chunk.ok()))
        .map(|data| BytesMessage {
            data: data.to_vec(),
        });
    let mut request = tonic::Request::new(outgoing);
    let metadata = request.metadata_mut();
    let invalid = |what: &str| BuildError::Unavailable(format!("invalid session metadata {what}"));
    let value = |v: &str| v.parse::<AsciiMetadataValue>().map_err(|_| invalid(v));
    metadata.insert(
        MetadataKey::from_static("x-docker-expose-session-uuid"),
        value(session_id)?,
    );
    metadata.insert(
        MetadataKey::from_static("x-docker-expose-session-name"),
        value("slipway")?,
    );
    metadata.insert(
        MetadataKey::from_static("x-docker-expose-session-sharedkey"),
        value(session_id)?,
    );
    for method in methods {
        metadata.append(
            MetadataKey::from_static("x-docker-expose-session-grpc-method"),
            value(method)?,
        );
    }

    let response = tokio::time::timeout(CONNECT_TIMEOUT, control.session(request))
        .await
        .map_err(|_| {
            BuildError::Unavailable(format!(
                "opening Control/Session: timed out after {CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|status| {
            BuildError::Unavailable(format!("opening Control/Session: {}", error_chain(&status)))
        })?;
    let incoming: IncomingBytes = Box::pin(response.into_inner().map(|message| {
        message
            .map(|m| Bytes::from(m.data))
            .map_err(io::Error::other)
    }));
    Ok(SessionStream {
        read: StreamReader::new(incoming),
        write,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{io::AsyncReadExt, net::UnixListener};

    #[tokio::test]
    async fn replays_bytes_read_with_the_upgrade_response() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("engine.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while find(&request, b"\r\n\r\n").is_none() {
                let mut chunk = [0u8; 256];
                let n = conn.read(&mut chunk).await.unwrap();
                request.extend_from_slice(&chunk[..n]);
            }
            // One write: the head and the first HTTP/2 bytes arrive together, as from dockerd.
            conn.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI-after")
                .await
                .unwrap();
            conn.write_all(b"-and-more").await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let mut io = upgrade(
            &socket,
            "/session",
            &[("X-Docker-Expose-Session-Uuid", "abc".into())],
        )
        .await
        .unwrap();
        let mut got = vec![0u8; "PRI-after-and-more".len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"PRI-after-and-more");
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /session HTTP/1.1\r\n"));
        assert!(request.contains("Upgrade: h2c\r\n"));
        assert!(request.contains("X-Docker-Expose-Session-Uuid: abc\r\n"));
    }

    #[tokio::test]
    async fn refused_upgrade_reports_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("engine.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut chunk = [0u8; 1024];
            let _ = conn.read(&mut chunk).await.unwrap();
            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 27\r\n\r\n{\"message\":\"page not found\"}")
                .await
                .unwrap();
        });
        let err = upgrade(&socket, "/grpc", &[]).await.err().unwrap();
        assert!(err.to_string().contains("404"), "{err}");
        assert!(err.to_string().contains("page not found"), "{err}");
    }
}

//! The daemon's side: [`RemoteSigner`] implements the backend's `StatementSigner` by asking
//! the signer process over its socket. It connects on first use and again after any failure;
//! while the signer is down every signature fails with `SignError::Unavailable` (the device
//! drops that bundle and goes on), and signing resumes once the signer is back.

use std::{
    io::ErrorKind,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use see_prefetch_backend::signer::{SignError, StatementSigner};
use virtio_prefetch_wire::BUNDLE_TBS_LEN;

use crate::protocol::{read_frame, write_frame, ProtocolError, Reply, Request};

/// How long one exchange may take before the connection is dropped.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A signer in another process.
#[derive(Debug)]
pub struct RemoteSigner {
    socket: PathBuf,
    connection: Mutex<Option<UnixStream>>,
}

fn unavailable(e: ProtocolError) -> std::io::Error {
    match e {
        ProtocolError::Io(e) => e,
        other => std::io::Error::new(ErrorKind::InvalidData, other),
    }
}

impl RemoteSigner {
    /// A client of the signer listening on `socket` (connected on first use).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            connection: Mutex::new(None),
        }
    }

    /// The signer's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn connect(&self) -> std::io::Result<UnixStream> {
        let stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(stream)
    }

    fn exchange(stream: &mut UnixStream, body: &[u8]) -> Result<Reply, ProtocolError> {
        write_frame(stream, body)?;
        match read_frame(stream, Reply::MAX_LEN)? {
            Some(reply) => Reply::parse(&reply),
            None => Err(ProtocolError::Io(ErrorKind::UnexpectedEof.into())),
        }
    }

    /// Sends `request`; on a broken connection, reconnects and tries once more.
    pub fn request(&self, request: &Request) -> Result<[u8; 96], SignError> {
        let body = request.encode();
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        for _ in 0..2 {
            let stream = match connection.as_mut() {
                Some(stream) => stream,
                None => connection.insert(self.connect()?),
            };
            match Self::exchange(stream, &body) {
                Ok(Reply::Signed(signature)) => return Ok(signature),
                Ok(Reply::Refused(refusal)) => return Err(SignError::Refused(Box::new(refusal))),
                Err(e) => {
                    *connection = None;
                    last = Some(e);
                }
            }
        }
        let e = last.map_or_else(|| ErrorKind::NotConnected.into(), unavailable);
        Err(SignError::Unavailable(e))
    }
}

impl StatementSigner for RemoteSigner {
    fn sign_statement(&self, statement: &[u8]) -> Result<[u8; 96], SignError> {
        self.request(&Request::bundle(statement))
    }

    fn sign_floors(&self, statement: &[u8]) -> Result<[u8; 96], SignError> {
        self.request(&Request::floors(statement))
    }

    fn sign_manifest(
        &self,
        statement: &[u8],
        bundles: &[[u8; BUNDLE_TBS_LEN]],
    ) -> Result<[u8; 96], SignError> {
        self.request(&Request::manifest(statement, bundles))
    }
}

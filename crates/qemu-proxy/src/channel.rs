//! Reading messages (with their file descriptors) from the proxy's socket and
//! writing replies.
//!
//! Contract: [`Channel::recv`] reads one whole message or fails; it reads at
//! most [`HEADER_SIZE`] + [`MAX_PAYLOAD`] bytes per message (the header is
//! checked before the payload is read) and takes ownership of every received
//! descriptor at once, so none leaks whatever happens next. More than
//! [`MAX_FDS`] descriptors on one read is an error (the kernel truncates the
//! control data; vmm-sys-util closes what arrived).

use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use thiserror::Error;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;
use zerocopy::FromBytes;

use crate::wire::{self, Message, MsgHeader, WireError, HEADER_SIZE, MAX_FDS, MAX_PAYLOAD};

/// Why the connection ended.
#[derive(Debug, Error)]
pub enum ChannelError {
    /// A socket error.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the socket in the middle of a message.
    #[error("peer closed the socket mid-message")]
    Truncated,
    /// A malformed message.
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
}

/// A received message and the descriptors that came with it.
#[derive(Debug)]
pub struct Received {
    /// The message.
    pub msg: Message,
    /// Its descriptors, in order.
    pub fds: Vec<OwnedFd>,
}

/// The remote's end of the proxy socket.
#[derive(Debug)]
pub struct Channel {
    sock: UnixStream,
}

impl Channel {
    /// Wraps the socket.
    pub fn new(sock: UnixStream) -> Channel {
        Channel { sock }
    }

    /// The socket (for polling).
    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    /// Reads exactly `buf.len()` bytes, collecting descriptors. `Ok(false)` if
    /// the peer closed the socket before the first byte.
    fn read_exact_fds(
        &mut self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
    ) -> Result<bool, ChannelError> {
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf[done..];
            let mut iov = [libc::iovec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            }];
            let mut raw: [RawFd; MAX_FDS] = [-1; MAX_FDS];
            // SAFETY: the iovec points at `rest`, a live, exclusively borrowed
            // byte slice of `iov_len` bytes that may hold any data.
            let r = unsafe { self.sock.recv_with_fds(&mut iov, &mut raw) };
            let (n, nfds) = match r {
                Ok(v) => v,
                Err(e) if e.errno() == libc::EINTR => continue,
                Err(e) => return Err(ChannelError::Io(io::Error::from_raw_os_error(e.errno()))),
            };
            for &fd in &raw[..nfds] {
                // SAFETY: recvmsg just installed `fd` in this process for us
                // (SCM_RIGHTS); nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            if n == 0 {
                return if done == 0 {
                    Ok(false)
                } else {
                    Err(ChannelError::Truncated)
                };
            }
            done += n;
        }
        Ok(true)
    }

    /// Reads one message. `Ok(None)`: the peer closed the socket between
    /// messages.
    pub fn recv(&mut self) -> Result<Option<Received>, ChannelError> {
        let mut fds = Vec::new();
        let mut hdr = [0u8; HEADER_SIZE];
        if !self.read_exact_fds(&mut hdr, &mut fds)? {
            return Ok(None);
        }
        let hdr = MsgHeader::read_from_bytes(&hdr).map_err(|_| ChannelError::Truncated)?;
        let (cmd, size) = wire::check_header(&hdr)?;
        let mut payload = [0u8; MAX_PAYLOAD];
        let payload = &mut payload[..size];
        if size > 0 && !self.read_exact_fds(payload, &mut fds)? {
            return Err(ChannelError::Truncated);
        }
        let msg = wire::decode(cmd, payload, fds.len())?;
        Ok(Some(Received { msg, fds }))
    }

    /// Sends a `RET` carrying `value`.
    pub fn send_ret(&mut self, value: u64) -> Result<(), ChannelError> {
        self.sock.write_all(&wire::encode_ret(value))?;
        Ok(())
    }
}

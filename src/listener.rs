//! One listening socket across restarts: after a restore the server re-executes its own binary
//! and hands its listening socket to the new image, so connections that arrive meanwhile wait in
//! the kernel backlog instead of being refused.

use std::ffi::{CString, OsStr};
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// Names the inherited listening socket's fd number in the re-executed process.
pub const LISTEN_FD_ENV: &str = "PB_BACKUPS_LISTEN_FD";

const BACKLOG: libc::c_int = 1024;

/// Adopts the listening socket named by `PB_BACKUPS_LISTEN_FD` (and removes the variable), or
/// binds `addr` with `SO_REUSEADDR` and a backlog of 1024. Call it before starting threads:
/// it edits the environment.
pub fn bind_or_inherit(addr: &str) -> io::Result<TcpListener> {
    if let Some(value) = std::env::var_os(LISTEN_FD_ENV) {
        // Removed whatever it holds, so no process we start later adopts a stale number.
        std::env::remove_var(LISTEN_FD_ENV);
        match listening_socket_fd(&value) {
            Some(fd) => return adopt(fd),
            None => tracing::warn!(
                value = ?value,
                "{LISTEN_FD_ENV} does not name an open listening socket; binding instead"
            ),
        }
    }
    bind(addr)
}

/// Replaces this process with a fresh run of its own binary (same argv), handing it the
/// listener. Every other fd has `FD_CLOEXEC` (Rust's default), so connections and database
/// handles close. Only returns on failure.
pub fn reexec(listener: &TcpListener) -> io::Error {
    let fd = listener.as_raw_fd();
    let (argv, envp) = match exec_args(fd) {
        Ok(args) => args,
        Err(err) => return err,
    };
    if let Err(err) = set_cloexec(fd, false) {
        return err;
    }
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    // The environment is passed explicitly rather than through `set_var`, which races with
    // other threads reading it.
    // SAFETY: both arrays are null-terminated and point into CStrings that outlive the call.
    unsafe {
        libc::execve(
            c"/proc/self/exe".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        )
    };
    let err = io::Error::last_os_error();
    // Still running: keep the listener from leaking into processes started later.
    let _ = set_cloexec(fd, true);
    err
}

/// This process's argv, and its environment with `PB_BACKUPS_LISTEN_FD=fd`.
fn exec_args(fd: RawFd) -> io::Result<(Vec<CString>, Vec<CString>)> {
    let argv = std::env::args_os()
        .map(|arg| c_string(arg.as_bytes().to_vec()))
        .collect::<io::Result<Vec<_>>>()?;
    let mut envp = Vec::new();
    for (key, value) in std::env::vars_os() {
        if key != LISTEN_FD_ENV {
            envp.push(c_string(env_entry(&key, &value))?);
        }
    }
    envp.push(c_string(env_entry(
        OsStr::new(LISTEN_FD_ENV),
        OsStr::new(&fd.to_string()),
    ))?);
    Ok((argv, envp))
}

fn env_entry(key: &OsStr, value: &OsStr) -> Vec<u8> {
    let mut entry = key.as_bytes().to_vec();
    entry.push(b'=');
    entry.extend_from_slice(value.as_bytes());
    entry
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The fd number in `value` if it is an open, listening TCP socket.
fn listening_socket_fd(value: &OsStr) -> Option<RawFd> {
    let fd: RawFd = value.to_str()?.parse().ok()?;
    let is_stream = int_sockopt(fd, libc::SO_TYPE).ok()? == libc::SOCK_STREAM;
    let is_listening = int_sockopt(fd, libc::SO_ACCEPTCONN).ok()? == 1;
    let domain = int_sockopt(fd, libc::SO_DOMAIN).ok()?;
    let is_ip = domain == libc::AF_INET || domain == libc::AF_INET6;
    (is_stream && is_listening && is_ip).then_some(fd)
}

fn adopt(fd: RawFd) -> io::Result<TcpListener> {
    // Checked by `listening_socket_fd` to be an open socket, and the variable naming it is
    // gone, so nothing else in this process claims it.
    // SAFETY: the fd is open and owned by nobody else in this process.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    set_cloexec(fd, true)?;
    // The previous image may have made it non-blocking; start from the state `bind` gives.
    listener.set_nonblocking(false)?;
    Ok(listener)
}

fn bind(addr: &str) -> io::Result<TcpListener> {
    let mut last_err = None;
    for socket_addr in addr.to_socket_addrs()? {
        match bind_one(&socket_addr) {
            Ok(listener) => return Ok(listener),
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

fn bind_one(addr: &SocketAddr) -> io::Result<TcpListener> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain syscall; the result is checked before use.
    let fd = check(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just created and is owned here only; dropping it on error closes it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_sockopt(fd, libc::SO_REUSEADDR, 1)?;
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: `storage` holds a sockaddr of `len` bytes for this socket's family.
    check(unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    // SAFETY: plain syscall on an fd we own.
    check(unsafe { libc::listen(fd, BACKLOG) })?;
    Ok(TcpListener::from(socket))
}

fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn int_sockopt(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` describe a c_int-sized buffer.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

fn set_int_sockopt(fd: RawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a c_int of `len` bytes.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            len,
        )
    })?;
    Ok(())
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an fd number has no memory effects; errors are checked.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) })?;
    Ok(())
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    /// Selects what `listener_child` does when a test runs it in a child process.
    const MODE_ENV: &str = "PB_BACKUPS_TEST_LISTENER_MODE";
    const CHILD_TEST: &str = "listener::tests::listener_child";
    /// Bounds every wait so a broken hand-off fails the test instead of hanging it.
    const WAIT: Duration = Duration::from_secs(60);

    fn child(mode: &str) -> Command {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            CHILD_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MODE_ENV, mode)
        .env_remove(LISTEN_FD_ENV);
        cmd
    }

    fn assert_accepts(listener: &TcpListener) {
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(b"hi").unwrap();
        let mut buf = [0; 2];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    /// Runs in a child process only (see the tests below); a no-op when run by hand.
    #[test]
    #[ignore = "run in a child process by the listener tests"]
    fn listener_child() {
        let Some(mode) = std::env::var_os(MODE_ENV) else {
            return;
        };
        let inherited = std::env::var_os(LISTEN_FD_ENV).is_some();
        match (mode.to_str(), inherited) {
            (Some("reexec"), false) => {
                let listener = bind_or_inherit("127.0.0.1:0").unwrap();
                // Another socket that, like every fd but the listener, must close at exec.
                let other = bind_or_inherit("127.0.0.1:0").unwrap();
                println!("PORT={}", listener.local_addr().unwrap().port());
                println!("OTHER={}", other.local_addr().unwrap().port());
                // Wait until the parent has queued a connection, then hand off.
                let mut line = String::new();
                io::stdin().read_line(&mut line).unwrap();
                let err = reexec(&listener);
                panic!("reexec failed: {err}");
            }
            (Some("reexec"), true) => {
                // Not a resolvable address: only inheriting can succeed.
                let listener = bind_or_inherit("not an address").unwrap();
                assert!(std::env::var_os(LISTEN_FD_ENV).is_none());
                let (mut conn, _) = listener.accept().unwrap();
                conn.write_all(b"inherited\n").unwrap();
            }
            (Some("fallback"), true) => {
                let listener = bind_or_inherit("127.0.0.1:0").unwrap();
                assert!(std::env::var_os(LISTEN_FD_ENV).is_none());
                assert_accepts(&listener);
            }
            other => panic!("unexpected child mode {other:?}"),
        }
    }

    #[test]
    fn fresh_bind_accepts_and_is_reusable() {
        let listener = bind_or_inherit("127.0.0.1:0").unwrap();
        assert_accepts(&listener);
        let fd = listener.as_raw_fd();
        assert_eq!(int_sockopt(fd, libc::SO_REUSEADDR).unwrap(), 1);
        assert_eq!(int_sockopt(fd, libc::SO_ACCEPTCONN).unwrap(), 1);
        // SAFETY: fcntl query on an open fd.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn busy_port_is_an_error() {
        let first = bind_or_inherit("127.0.0.1:0").unwrap();
        let addr = first.local_addr().unwrap().to_string();
        let err = bind_or_inherit(&addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn binds_ipv6_too() {
        // Hosts without IPv6 cannot run this check.
        let Ok(listener) = bind_or_inherit("[::1]:0") else {
            return;
        };
        assert!(listener.local_addr().unwrap().is_ipv6());
        assert_accepts(&listener);
    }

    #[test]
    fn socket_survives_reexec_and_queued_connection_is_served() {
        let mut proc = child("reexec")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(proc.stdout.take().unwrap());
        let (mut port, mut other) = (None, None);
        let mut line = String::new();
        while port.is_none() || other.is_none() {
            line.clear();
            assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "child ended early");
            // The harness may print its own text before ours on the same line.
            if let Some((_, p)) = line.trim().split_once("PORT=") {
                port = p.parse::<u16>().ok();
            } else if let Some((_, p)) = line.trim().split_once("OTHER=") {
                other = p.parse::<u16>().ok();
            }
        }
        let (port, other) = (port.unwrap(), other.unwrap());

        // Queued in the backlog before the exec; served by the new image.
        let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        proc.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut reply = String::new();
        BufReader::new(&conn).read_line(&mut reply).unwrap();
        assert_eq!(reply, "inherited\n");

        // The new image is running, so the exec has happened and the other socket is closed.
        let refused = TcpStream::connect(("127.0.0.1", other)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        // Drain the rest so the child never blocks on a full pipe.
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        assert!(proc.wait().unwrap().success(), "child output: {rest}");
        conn.shutdown(std::net::Shutdown::Both).ok();
    }

    #[test]
    fn bogus_inherited_fd_falls_back_to_binding() {
        // Not a number; a closed fd; stdin (here /dev/null, not a socket).
        for value in ["nonsense", "987", "0"] {
            let output = child("fallback")
                .env(LISTEN_FD_ENV, value)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{value}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

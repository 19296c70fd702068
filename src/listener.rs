//! One listening socket across restarts: after a restore the server re-executes its own binary
//! and hands its listening socket to the new image, so connections that arrive meanwhile wait in
//! the kernel backlog instead of being refused.

use std::ffi::{CString, OsStr};
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};

/// Names the inherited listening socket's fd number in the re-executed process.
pub const LISTEN_FD_ENV: &str = "PB_BACKUPS_LISTEN_FD";
/// The process name (`comm`) the operator started, for the re-executed process: an exec
/// through `/proc/self/exe` would otherwise rename it `exe` for ps, top and pgrep.
pub const PROC_NAME_ENV: &str = "PB_BACKUPS_PROC_NAME";

const BACKLOG: i32 = 1024;

/// What a re-executed process inherits from the one before it, taken out of the environment.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The listening socket, if the variable named one.
    pub listener: Option<TcpListener>,
    /// Why a `PB_BACKUPS_LISTEN_FD` was ignored, to be logged once logging is set up.
    pub ignored: Option<String>,
}

/// Takes `PB_BACKUPS_LISTEN_FD` and `PB_BACKUPS_PROC_NAME` out of the environment, adopting the
/// socket and restoring the process name they carry. Call it first in `main`, while the
/// process has one thread: editing the environment races with any other thread reading it.
pub fn take_inherited() -> Inherited {
    if let Some(name) = std::env::var_os(PROC_NAME_ENV) {
        std::env::remove_var(PROC_NAME_ENV);
        // Best effort: a wrong name is cosmetic.
        if let Ok(name) = CString::new(name.as_bytes()) {
            let _ = rustix::thread::set_name(&name);
        }
    }
    let Some(value) = std::env::var_os(LISTEN_FD_ENV) else {
        return Inherited::default();
    };
    // Removed whatever it holds, so no process we start later adopts a stale number.
    std::env::remove_var(LISTEN_FD_ENV);
    let adopted = match listening_socket_fd(&value) {
        Some(fd) => adopt(fd).map_err(|e| e.to_string()),
        None => Err("it does not name an open listening socket".to_string()),
    };
    match adopted {
        Ok(listener) => Inherited { listener: Some(listener), ignored: None },
        Err(why) => Inherited { listener: None, ignored: Some(format!("{LISTEN_FD_ENV}={value:?} ignored: {why}")) },
    }
}

/// The inherited listener if there is one, or `addr` bound with `SO_REUSEADDR` and a backlog
/// of 1024.
pub fn bind_or_inherit(addr: &str, inherited: Inherited) -> io::Result<TcpListener> {
    if let Some(why) = inherited.ignored {
        tracing::warn!("{why}; binding instead");
    }
    match inherited.listener {
        Some(listener) => Ok(listener),
        None => bind(addr),
    }
}

/// Replaces this process with a fresh run of its own binary (same argv), handing it the
/// listener. Every other fd has `FD_CLOEXEC` (Rust's default), so connections and database
/// handles close. Only returns on failure.
///
/// The exec itself stays our own `execve` call: std's `CommandExt::exec` resets SIGPIPE to its
/// default before exec'ing and leaves it so if the exec fails, after which a write to a closed
/// connection would kill the server (rustix offers execve only as an unstable runtime call).
pub fn reexec(listener: &TcpListener) -> io::Error {
    let fd = listener.as_raw_fd();
    let (argv, envp) = match exec_args(fd) {
        Ok(args) => args,
        Err(err) => return err,
    };
    if let Err(err) = set_cloexec(listener, false) {
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
    let _ = set_cloexec(listener, true);
    err
}

/// This process's argv (so `ps` shows the command line the operator gave), and its environment
/// with `PB_BACKUPS_LISTEN_FD=fd` and the process name.
fn exec_args(fd: RawFd) -> io::Result<(Vec<CString>, Vec<CString>)> {
    let argv = std::env::args_os()
        .map(|arg| c_string(arg.as_bytes().to_vec()))
        .collect::<io::Result<Vec<_>>>()?;
    let mut envp = Vec::new();
    for (key, value) in std::env::vars_os() {
        if key != LISTEN_FD_ENV && key != PROC_NAME_ENV {
            envp.push(c_string(env_entry(&key, &value))?);
        }
    }
    envp.push(c_string(env_entry(
        OsStr::new(LISTEN_FD_ENV),
        OsStr::new(&fd.to_string()),
    ))?);
    // The process's own name (the thread group leader's), not the calling worker thread's.
    if let Ok(name) = std::fs::read("/proc/self/comm") {
        let name = name.strip_suffix(b"\n").unwrap_or(&name);
        envp.push(c_string(env_entry(OsStr::new(PROC_NAME_ENV), OsStr::from_bytes(name)))?);
    }
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
    // A number from the environment: check it is open before borrowing it.
    fcntl_getfd_raw(fd)?;
    // SAFETY: the fd is open (just checked) and only borrowed for these queries.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let is_stream = sockopt::socket_type(borrowed).ok()? == SocketType::STREAM;
    let is_listening = sockopt::socket_acceptconn(borrowed).ok()?;
    let domain = sockopt::socket_domain(borrowed).ok()?;
    let is_ip = domain == AddressFamily::INET || domain == AddressFamily::INET6;
    (is_stream && is_listening && is_ip).then_some(fd)
}

/// Whether `fd` is an open descriptor, asked without claiming it.
fn fcntl_getfd_raw(fd: RawFd) -> Option<()> {
    if fd < 0 {
        return None;
    }
    // Our own call: rustix takes only descriptors already known to be open.
    // SAFETY: F_GETFD on any number has no memory effects; a closed one gives EBADF.
    (unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1).then_some(())
}

fn adopt(fd: RawFd) -> io::Result<TcpListener> {
    // Checked by `listening_socket_fd` to be an open socket, and the variable naming it is
    // gone, so nothing else in this process claims it.
    // SAFETY: the fd is open and owned by nobody else in this process.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    set_cloexec(&listener, true)?;
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
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let socket = rustix::net::socket_with(domain, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    rustix::net::bind(&socket, addr)?;
    rustix::net::listen(&socket, BACKLOG)?;
    Ok(TcpListener::from(socket))
}

fn set_cloexec(fd: impl AsFd, on: bool) -> io::Result<()> {
    let flags = fcntl_getfd(&fd)?;
    let flags = if on { flags | FdFlags::CLOEXEC } else { flags - FdFlags::CLOEXEC };
    fcntl_setfd(&fd, flags)?;
    Ok(())
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

    /// What the child prints once its mode ran to the end: the parent looks for it, since the
    /// harness exits 0 also when its filter matched no test at all.
    const CHILD_DONE: &str = "listener_child done:";

    /// The child's output: its mode's line and the harness's count of one test passed.
    fn assert_child_ran(stdout: &str, mode: &str) {
        assert!(stdout.contains(&format!("{CHILD_DONE} {mode}")), "the child's {mode} mode did not run to its end:\n{stdout}");
        assert!(stdout.contains("test result: ok. 1 passed"), "the child ran no test:\n{stdout}");
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
                let listener = bind_or_inherit("127.0.0.1:0", take_inherited()).unwrap();
                // Another socket that, like every fd but the listener, must close at exec.
                let other = bind_or_inherit("127.0.0.1:0", Inherited::default()).unwrap();
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
                let listener = bind_or_inherit("not an address", take_inherited()).unwrap();
                assert!(std::env::var_os(LISTEN_FD_ENV).is_none());
                assert!(std::env::var_os(PROC_NAME_ENV).is_none());
                // Exec'd through /proc/self/exe, yet named as before (the kernel keeps 15 bytes).
                let exe = std::env::current_exe().unwrap();
                let name = exe.file_name().unwrap().as_bytes();
                let comm = std::fs::read("/proc/thread-self/comm").unwrap();
                assert_eq!(String::from_utf8_lossy(&comm).trim_end(), String::from_utf8_lossy(&name[..name.len().min(15)]));
                let (mut conn, _) = listener.accept().unwrap();
                conn.write_all(b"inherited\n").unwrap();
                println!("{CHILD_DONE} reexec");
            }
            (Some("fallback"), true) => {
                let inherited = take_inherited();
                assert!(inherited.listener.is_none() && inherited.ignored.is_some());
                let listener = bind_or_inherit("127.0.0.1:0", inherited).unwrap();
                assert!(std::env::var_os(LISTEN_FD_ENV).is_none());
                assert_accepts(&listener);
                println!("{CHILD_DONE} fallback");
            }
            other => panic!("unexpected child mode {other:?}"),
        }
    }

    #[test]
    fn fresh_bind_accepts_and_is_reusable() {
        let listener = bind_or_inherit("127.0.0.1:0", Inherited::default()).unwrap();
        assert_accepts(&listener);
        assert!(sockopt::socket_reuseaddr(&listener).unwrap());
        assert!(sockopt::socket_acceptconn(&listener).unwrap());
        assert!(fcntl_getfd(&listener).unwrap().contains(FdFlags::CLOEXEC));
    }

    #[test]
    fn busy_port_is_an_error() {
        let first = bind_or_inherit("127.0.0.1:0", Inherited::default()).unwrap();
        let addr = first.local_addr().unwrap().to_string();
        let err = bind_or_inherit(&addr, Inherited::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// Whether the host has the IPv6 loopback address (`::1` on `lo`), as the kernel lists it.
    fn has_ipv6_loopback() -> bool {
        std::fs::read_to_string("/proc/net/if_inet6")
            .is_ok_and(|text| text.lines().any(|l| l.starts_with("00000000000000000000000000000001 ")))
    }

    #[test]
    fn binds_ipv6_too() {
        // Only a host without IPv6 may skip this, and it says so: `scripts/test` counts the
        // `test-skipped:` lines. (Written to the stderr handle, which the test harness does
        // not capture, unlike `eprintln!`.) A host with `::1` that cannot bind it fails.
        if !has_ipv6_loopback() {
            let _ = writeln!(io::stderr(), "test-skipped: listener::tests::binds_ipv6_too: no IPv6 loopback (::1) on this host");
            return;
        }
        let listener = bind_or_inherit("[::1]:0", Inherited::default()).expect("the host has ::1: binding it must work");
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
        assert_child_ran(&rest, "reexec");
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
            assert_child_ran(&String::from_utf8_lossy(&output.stdout), "fallback");
        }
    }
}

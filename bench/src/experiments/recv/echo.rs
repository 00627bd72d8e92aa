//! The server under test: one thread answers every request on its connections with a fixed
//! response, through one of the kernel's receive paths. It never parses: a request is a fixed
//! number of bytes (the load's request is the same every time), however the reads cut them,
//! and each whole one gets [`RESPONSE`]. Every path touches the same bytes, so what differs
//! is the path alone.
//!
//! A send that the socket does not take whole ends the run with an error: each connection has
//! one request in flight, so a response is never queued behind another and a short send means
//! the measurement is not what it claims to be.

use std::alloc::{self, Layout};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use rinha_sys::send::send_now;
use rinha_sys::uring::Taskrun;

use crate::measure::process::thread_cpu_seconds;

/// What the server answers to each request: the backend's `202`.
pub const RESPONSE: &[u8] = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";

/// Bytes one receive may fill (per connection, or per provided buffer).
const READ_SIZE: usize = 4096;

/// A receive path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Edge-triggered epoll; `recv(2)` until `EAGAIN`, `send(2)` (what monoio's legacy driver
    /// and mio do).
    Epoll,
    /// io_uring, one `RECV` per message into the connection's own buffer, armed again after
    /// each completion (what monoio does).
    Uring,
    /// io_uring, one multishot `RECV` per connection (Linux 6.0) that picks a buffer from a
    /// ring of provided buffers (5.19) for each message and stays armed.
    Multishot,
    /// `multishot`, with every connection's descriptor registered with the ring (5.1) and its
    /// receive and its sends naming the registered one: io_uring with its own features.
    MultishotFixed,
}

impl Mode {
    /// Whether the path receives through a multishot receive over provided buffers.
    pub fn multishot(self) -> bool {
        matches!(self, Mode::Multishot | Mode::MultishotFixed)
    }
}

/// How the io_uring paths send their responses (epoll always calls `send(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Send {
    /// A `SEND` on the ring, submitted with the next wait (monoio's writes).
    Ring,
    /// A non-blocking `send(2)` at once (the backend's `RESPONSE_SEND=direct`).
    Direct,
}

/// How the server is set up.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub mode: Mode,
    pub send: Send,
    pub taskrun: Taskrun,
    /// Provided buffers in the multishot ring (a power of two).
    pub buffers: u16,
    /// The server thread bound to one CPU and its clients to the others, so every answer
    /// wakes a client on another CPU whatever the path (unbound, where the scheduler places
    /// a woken client differs between paths and that dominates a message's cost).
    pub pin: bool,
}

/// What the server did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Served {
    /// Requests answered.
    pub messages: u64,
    /// CPU seconds of the server thread from the moment every client is accepted (the path's
    /// setup included: an epoll instance, or a ring and its buffers) to the last one's end.
    pub cpu_secs: f64,
    /// Multishot receives armed again because the kernel ended one (out of buffers).
    pub rearms: u64,
}

/// Accepts `connections` clients from `listener`, answers each `request_len` bytes they send
/// until every one has closed, and reports. The CPU clock starts once all are accepted.
pub fn serve(
    listener: &TcpListener,
    connections: usize,
    request_len: usize,
    setup: Setup,
) -> io::Result<Served> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        conns.push(Conn {
            fd: stream.into(),
            request_len,
            pending: 0,
            open: true,
        });
    }
    let cpu = thread_cpu_seconds();
    let mut served = match setup.mode {
        Mode::Epoll => epoll(&mut conns)?,
        Mode::Uring | Mode::Multishot | Mode::MultishotFixed => uring(&mut conns, setup)?,
    };
    served.cpu_secs = thread_cpu_seconds() - cpu;
    Ok(served)
}

struct Conn {
    fd: OwnedFd,
    /// The size of every request.
    request_len: usize,
    /// Bytes of a request received so far.
    pending: usize,
    open: bool,
}

impl Conn {
    /// Counts `len` received bytes; returns how many requests they complete.
    fn received(&mut self, len: usize) -> u64 {
        self.pending += len;
        let whole = self.pending / self.request_len;
        self.pending %= self.request_len;
        whole as u64
    }
}

fn short_send(sent: usize) -> io::Error {
    io::Error::other(format!(
        "a response went out short ({sent} of {} bytes): the run would not measure what it claims",
        RESPONSE.len()
    ))
}

fn respond_now(fd: RawFd) -> io::Result<()> {
    match send_now(fd, RESPONSE)? {
        n if n == RESPONSE.len() => Ok(()),
        n => Err(short_send(n)),
    }
}

fn epoll(conns: &mut [Conn]) -> io::Result<Served> {
    // SAFETY: epoll_create1 has no preconditions; the result is checked and then owned.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let epfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(epfd) };
    for (index, conn) in conns.iter().enumerate() {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: index as u64,
        };
        // SAFETY: both descriptors are open; `event` outlives the call.
        let rc = unsafe {
            libc::epoll_ctl(
                epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                conn.fd.as_raw_fd(),
                &mut event,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut served = Served::default();
    let mut open = conns.len();
    let mut buf = vec![0u8; READ_SIZE];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    while open > 0 {
        // SAFETY: `events` has room for the count passed.
        let ready = unsafe {
            libc::epoll_wait(
                epfd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                -1,
            )
        };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        for event in &events[..ready as usize] {
            let conn = &mut conns[event.u64 as usize];
            // Edge-triggered: read until the socket is empty.
            while conn.open {
                // SAFETY: `buf` is writable for its length.
                let rc = unsafe {
                    libc::recv(
                        conn.fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                match rc {
                    0 => {
                        conn.open = false;
                        open -= 1;
                    }
                    n if n > 0 => {
                        for _ in 0..conn.received(n as usize) {
                            respond_now(conn.fd.as_raw_fd())?;
                            served.messages += 1;
                        }
                    }
                    _ => {
                        let error = io::Error::last_os_error();
                        match error.kind() {
                            io::ErrorKind::WouldBlock => break,
                            io::ErrorKind::Interrupted => continue,
                            _ => return Err(error),
                        }
                    }
                }
            }
        }
    }
    Ok(served)
}

/// The group id of the multishot path's provided buffers.
const GROUP: u16 = 0;

/// What a completion is for: the connection index in the high bits, the operation in the low.
const RECV: u64 = 0;
const SEND: u64 = 1;

fn user_data(index: usize, op: u64) -> u64 {
    ((index as u64) << 1) | op
}

/// How an entry names a connection: by its descriptor, or by its index among the descriptors
/// registered with the ring (no descriptor lookup and reference count per operation).
#[derive(Clone, Copy)]
enum Desc {
    Plain(RawFd),
    Fixed(u32),
}

/// Builds an entry on `$desc`, binding `$target` to the descriptor type the opcode takes.
macro_rules! on {
    ($desc:expr, $target:ident => $build:expr) => {
        match $desc {
            Desc::Plain(fd) => {
                let $target = types::Fd(fd);
                $build
            }
            Desc::Fixed(index) => {
                let $target = types::Fixed(index);
                $build
            }
        }
    };
}

/// The memory the kernel reads into. It must outlive every armed receive, so it is made
/// before the ring and, when a run fails with receives still armed, never freed.
enum ReadMemory {
    /// One-shot path: one buffer per connection.
    Own(Vec<Vec<u8>>),
    /// Multishot path: the ring of provided buffers.
    Provided(BufferRing),
}

impl ReadMemory {
    /// The receive to arm for connection `index`, named by `desc`.
    fn receive(&mut self, index: usize, desc: Desc) -> squeue::Entry {
        match self {
            ReadMemory::Own(buffers) => {
                let buf = &mut buffers[index];
                on!(desc, fd => opcode::Recv::new(fd, buf.as_mut_ptr(), buf.len() as u32).build())
            }
            ReadMemory::Provided(_) => on!(desc, fd => opcode::RecvMulti::new(fd, GROUP).build()),
        }
        .user_data(user_data(index, RECV))
    }
}

fn uring(conns: &mut [Conn], setup: Setup) -> io::Result<Served> {
    let mut memory = if setup.mode.multishot() {
        ReadMemory::Provided(BufferRing::new(setup.buffers)?)
    } else {
        ReadMemory::Own(conns.iter().map(|_| vec![0u8; READ_SIZE]).collect())
    };
    let served = uring_loop(conns, setup, &mut memory);
    if served.is_err() {
        // Receives may still be armed into `memory` while the ring winds down.
        std::mem::forget(memory);
    }
    served
}

fn uring_loop(conns: &mut [Conn], setup: Setup, memory: &mut ReadMemory) -> io::Result<Served> {
    // Room for a receive and a send per connection, so a push never finds the queue full.
    let entries = (2 * conns.len() + 8).next_power_of_two() as u32;
    let (mut ring, _) = setup.taskrun.build_or_default(|taskrun| {
        let mut builder = IoUring::builder();
        taskrun.apply(&mut builder);
        builder.build(entries)
    })?;
    if let ReadMemory::Provided(provided) = memory {
        provided.register(&ring)?;
    }
    let fixed = setup.mode == Mode::MultishotFixed;
    if fixed {
        let fds: Vec<RawFd> = conns.iter().map(|conn| conn.fd.as_raw_fd()).collect();
        ring.submitter().register_files(&fds)?;
    }
    let desc = |index: usize, fd: RawFd| {
        if fixed {
            Desc::Fixed(index as u32)
        } else {
            Desc::Plain(fd)
        }
    };
    for (index, conn) in conns.iter().enumerate() {
        push(
            &mut ring,
            &memory.receive(index, desc(index, conn.fd.as_raw_fd())),
        )?;
    }
    let mut served = Served::default();
    let mut open = conns.len();
    let mut completions: Vec<cqueue::Entry> = Vec::with_capacity(entries as usize * 2);
    while open > 0 {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        completions.extend(ring.completion());
        for cqe in completions.drain(..) {
            let index = (cqe.user_data() >> 1) as usize;
            let conn = &mut conns[index];
            let fd = conn.fd.as_raw_fd();
            if cqe.user_data() & 1 == SEND {
                match cqe.result() {
                    n if n as usize == RESPONSE.len() => continue,
                    n if n >= 0 => return Err(short_send(n as usize)),
                    n => return Err(io::Error::from_raw_os_error(-n)),
                }
            }
            let received = match cqe.result() {
                0 => {
                    conn.open = false;
                    open -= 1;
                    continue;
                }
                n if n > 0 => n as usize,
                n if -n == libc::ENOBUFS && matches!(memory, ReadMemory::Provided(_)) => 0,
                n => return Err(io::Error::from_raw_os_error(-n)),
            };
            for _ in 0..conn.received(received) {
                served.messages += 1;
                match setup.send {
                    Send::Direct => respond_now(fd)?,
                    Send::Ring => {
                        let send = on!(desc(index, fd), fd => opcode::Send::new(
                            fd,
                            RESPONSE.as_ptr(),
                            RESPONSE.len() as u32,
                        )
                        .build())
                        .user_data(user_data(index, SEND));
                        push(&mut ring, &send)?;
                    }
                }
            }
            let ended = match memory {
                ReadMemory::Own(_) => true,
                ReadMemory::Provided(provided) => {
                    if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                        provided.give_back(bid);
                    }
                    // The kernel ended this receive (out of buffers, or a full completion
                    // queue): it is armed again below.
                    let ended = !cqueue::more(cqe.flags());
                    served.rearms += u64::from(ended);
                    ended
                }
            };
            if ended {
                push(&mut ring, &memory.receive(index, desc(index, fd)))?;
            }
        }
    }
    Ok(served)
}

/// Pushes one entry, submitting first if the queue is full.
fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    // SAFETY: every buffer an entry names (a connection's own buffer, the static response,
    // the provided-buffer ring) lives until the ring is dropped, after its last completion.
    if unsafe { ring.submission().push(entry) }.is_ok() {
        return Ok(());
    }
    ring.submit()?;
    // SAFETY: as above.
    unsafe { ring.submission().push(entry) }
        .map_err(|_| io::Error::other("the submission queue stays full after a submit"))
}

/// A ring of provided buffers registered with one io_uring (group [`GROUP`]): the kernel takes
/// a buffer for each message it receives and the server gives it back once read.
struct BufferRing {
    /// `count` entries, page-aligned, shared with the kernel.
    entries: *mut types::BufRingEntry,
    /// `count` buffers of [`READ_SIZE`] bytes.
    memory: Vec<u8>,
    count: u16,
    /// The next tail to publish (the kernel reads it; only this thread writes it).
    tail: u16,
}

impl BufferRing {
    fn layout(count: u16) -> Layout {
        let bytes = usize::from(count) * size_of::<types::BufRingEntry>();
        Layout::from_size_align(bytes, 4096).expect("a page-aligned ring layout")
    }

    /// Allocates `count` buffers and their ring (not yet registered).
    fn new(count: u16) -> io::Result<BufferRing> {
        if !count.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the provided-buffer ring needs a power-of-two count",
            ));
        }
        // SAFETY: the layout has a non-zero size (count >= 1).
        let entries =
            unsafe { alloc::alloc_zeroed(Self::layout(count)) }.cast::<types::BufRingEntry>();
        if entries.is_null() {
            alloc::handle_alloc_error(Self::layout(count));
        }
        Ok(BufferRing {
            entries,
            memory: vec![0u8; usize::from(count) * READ_SIZE],
            count,
            tail: 0,
        })
    }

    /// Registers the ring with `ring` (Linux 5.19) and hands the kernel every buffer.
    fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: `entries` is a page-aligned array of `count` entries that outlives the ring
        // (see `ReadMemory`); the kernel reads it and the tail from here on.
        unsafe {
            ring.submitter()
                .register_buf_ring(self.entries as u64, self.count, GROUP)?;
        }
        for bid in 0..self.count {
            self.give_back(bid);
        }
        Ok(())
    }

    /// Publishes buffer `bid` at the tail for the kernel to fill again.
    fn give_back(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        let addr = self.memory[usize::from(bid) * READ_SIZE..].as_mut_ptr() as u64;
        // SAFETY: `slot < count`, within the allocation; the kernel reads the slot only once
        // the tail below moves past it.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(addr);
        entry.set_len(READ_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lies in the first entry, shared with the kernel, which only
        // reads it; the release store orders the entry's fields before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout. Dropped only after the io_uring it was
        // registered with (see `ReadMemory`).
        unsafe { alloc::dealloc(self.entries.cast(), Self::layout(self.count)) };
    }
}

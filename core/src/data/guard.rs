//! The stack-overflow guard of loader workers. See NOTE [ Stack overflow in a worker ] in
//! `engine.rs`: on Linux, a fault in a worker's guard page marks the worker and parks its
//! thread for good instead of aborting the process; elsewhere nothing is installed.

pub(crate) use imp::{SUPPORTED, enter};

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::Cell;
    use std::ptr::{null, null_mut};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Whether a worker's stack overflow becomes an error instead of an abort.
    pub(crate) const SUPPORTED: bool = true;

    /// The alternate signal stack a worker gets when it has none (std gives its threads one).
    const ALTSTACK_SIZE: usize = 64 * 1024;

    /// This thread's guard-page range and the flag to raise when it is hit; set on workers only.
    #[derive(Clone, Copy)]
    struct Guard {
        start: usize,
        end: usize,
        flag: *const AtomicBool,
    }

    thread_local! {
        // A const-initialised `Cell` of plain data: reading it is one thread-local load, with
        // no lazy initialisation, so the signal handler may read it.
        static GUARD: Cell<Guard> = const {
            Cell::new(Guard { start: 0, end: 0, flag: null() })
        };
    }

    /// The SIGSEGV and SIGBUS actions that were in place before ours (std's, usually).
    struct Previous([libc::sigaction; 2]);
    // SAFETY: plain data (handler addresses, flags and masks), written once (in `install`,
    // through the `OnceLock`) before any read, and never written again: shared reads are fine.
    unsafe impl Sync for Previous {}
    // SAFETY: plain data with no thread affinity: the handler addresses are valid in every
    // thread of the process.
    unsafe impl Send for Previous {}

    static PREVIOUS: OnceLock<Previous> = OnceLock::new();

    /// While a worker holds this, an overflow of its stack is caught; dropping it undoes that.
    pub(crate) struct Entered {
        /// The alternate signal stack this module installed, when the thread had none.
        altstack: Option<Vec<u8>>,
        active: bool,
    }

    /// Guards the calling thread: a fault in its guard page raises `flag` and parks it.
    /// `flag` must outlive the thread (the worker's `Arc<Slot>` does: a parked thread never
    /// drops it).
    pub(crate) fn enter(flag: &AtomicBool) -> Entered {
        let mut entered = Entered {
            altstack: None,
            active: false,
        };
        let Some((start, end)) = install().then(guard_range).flatten() else {
            return entered;
        };
        // SAFETY: sigaltstack with a null new stack only reads the current one; the stack
        // installed here stays alive (in `entered`) until `drop` uninstalls it.
        unsafe {
            let mut current: libc::stack_t = std::mem::zeroed();
            if libc::sigaltstack(null(), &mut current) != 0 {
                return entered;
            }
            if current.ss_flags & libc::SS_DISABLE != 0 {
                let mut stack = vec![0u8; ALTSTACK_SIZE];
                let new = libc::stack_t {
                    ss_sp: stack.as_mut_ptr().cast(),
                    ss_flags: 0,
                    ss_size: stack.len(),
                };
                if libc::sigaltstack(&new, null_mut()) != 0 {
                    return entered;
                }
                entered.altstack = Some(stack);
            }
        }
        GUARD.with(|g| {
            g.set(Guard {
                start,
                end,
                flag: flag as *const AtomicBool,
            })
        });
        entered.active = true;
        entered
    }

    impl Drop for Entered {
        fn drop(&mut self) {
            if self.active {
                GUARD.with(|g| {
                    g.set(Guard {
                        start: 0,
                        end: 0,
                        flag: null(),
                    })
                });
            }
            if self.altstack.is_some() {
                let off = libc::stack_t {
                    ss_sp: null_mut(),
                    ss_flags: libc::SS_DISABLE,
                    ss_size: ALTSTACK_SIZE,
                };
                // SAFETY: disables the alternate stack before its memory is freed below.
                unsafe {
                    libc::sigaltstack(&off, null_mut());
                }
            }
        }
    }

    /// Puts `on_fault` in front of the current SIGSEGV and SIGBUS handlers, once per process.
    fn install() -> bool {
        static INSTALLED: OnceLock<bool> = OnceLock::new();
        *INSTALLED.get_or_init(|| {
            // SAFETY: reads the current actions, then installs ours; `PREVIOUS` is set before
            // `on_fault` can run.
            unsafe {
                let mut previous: [libc::sigaction; 2] = std::mem::zeroed();
                for (sig, prev) in [libc::SIGSEGV, libc::SIGBUS].into_iter().zip(&mut previous) {
                    if libc::sigaction(sig, null(), prev) != 0 {
                        return false;
                    }
                }
                if PREVIOUS.set(Previous(previous)).is_err() {
                    return false;
                }
                let mut ours: libc::sigaction = std::mem::zeroed();
                ours.sa_sigaction = on_fault as *const () as libc::sighandler_t;
                ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut ours.sa_mask);
                [libc::SIGSEGV, libc::SIGBUS]
                    .into_iter()
                    .all(|sig| libc::sigaction(sig, &ours, null_mut()) == 0)
            }
        })
    }

    /// The addresses whose fault means "this thread overflowed its stack": the guard page(s)
    /// next to the stack's low end, on either side since glibc versions differ in whether the
    /// reported stack includes the guard (std's own handler uses the same range).
    fn guard_range() -> Option<(usize, usize)> {
        // SAFETY: `attr` is initialised by pthread_getattr_np before it is read, and destroyed
        // once.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return None;
            }
            let (mut addr, mut size, mut guard) = (null_mut(), 0usize, 0usize);
            let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0
                && libc::pthread_attr_getguardsize(&attr, &mut guard) == 0;
            libc::pthread_attr_destroy(&mut attr);
            let page = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)).unwrap_or(4096);
            let guard = guard.max(page);
            let low = addr as usize;
            (ok && low > 0).then(|| (low.saturating_sub(guard), low.saturating_add(guard)))
        }
    }

    /// The signal handler. Only async-signal-safe work: a thread-local read, an atomic store,
    /// signal-mask and sigaction calls.
    extern "C" fn on_fault(
        sig: libc::c_int,
        info: *mut libc::siginfo_t,
        context: *mut libc::c_void,
    ) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
        let address = unsafe { (*info).si_addr() } as usize;
        let guard = GUARD.try_with(Cell::get).unwrap_or(Guard {
            start: 0,
            end: 0,
            flag: null(),
        });
        if !guard.flag.is_null() && (guard.start..guard.end).contains(&address) {
            // SAFETY: `flag` outlives the thread (see `enter`), and this thread never returns.
            unsafe {
                (*guard.flag).store(true, Ordering::SeqCst);
                park_forever()
            }
        }
        // SAFETY: forwards the fault with the kernel's own arguments.
        unsafe { chain(sig, info, context) }
    }

    /// Blocks every signal on this thread and sleeps for good: the worker never runs again.
    ///
    /// # Safety
    /// Only for a thread that must never run again and whose stack may be leaked: nothing on
    /// it is dropped (the loader's worker after a stack overflow, from the signal handler).
    unsafe fn park_forever() -> ! {
        // SAFETY: sigfillset fills a local set; sigprocmask changes this thread's mask only.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, null_mut());
            loop {
                libc::pause();
            }
        }
    }

    /// Hands a fault that is not a worker's overflow to the handler that was there before.
    ///
    /// # Safety
    /// Only from the signal handler for `sig`, with the `info` and `context` the kernel passed
    /// it: the previous handler is called with them.
    unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
        let index = usize::from(sig != libc::SIGSEGV);
        let Some(Previous(previous)) = PREVIOUS.get() else {
            return;
        };
        let previous = &previous[index];
        // SAFETY: the previous handler was installed for this signal with these flags, so it
        // takes these arguments.
        unsafe {
            match previous.sa_sigaction {
                libc::SIG_DFL | libc::SIG_IGN => {
                    // Back to the default action: the faulting instruction runs again on return
                    // and the process ends as it would have without us.
                    let mut default: libc::sigaction = std::mem::zeroed();
                    default.sa_sigaction = libc::SIG_DFL;
                    libc::sigaction(sig, &default, null_mut());
                }
                handler if previous.sa_flags & libc::SA_SIGINFO != 0 => {
                    let handler: extern "C" fn(
                        libc::c_int,
                        *mut libc::siginfo_t,
                        *mut libc::c_void,
                    ) = std::mem::transmute(handler);
                    handler(sig, info, context);
                }
                handler => {
                    let handler: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
                    handler(sig);
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::sync::atomic::AtomicBool;

    /// No guard here: a worker's stack overflow aborts the process, as in any Rust program.
    pub(crate) const SUPPORTED: bool = false;

    pub(crate) struct Entered;

    pub(crate) fn enter(_flag: &AtomicBool) -> Entered {
        Entered
    }
}

//! Accounting from many threads at once leaves the process's panic hook in
//! place: OpenDP swaps it for a silent one during its arithmetic, and
//! unserialized callers could leave the silent one installed, losing every
//! later panic message (a failed test's, a crashed server's).
//!
//! Its own test binary: it installs a panic hook for the whole process.

use std::sync::atomic::{AtomicUsize, Ordering};

use hush_privacy::epsilon_for_rho;
use hush_privacy::{Delta, Rho};

static REPORTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn concurrent_accounting_keeps_the_panic_hook() {
    std::panic::set_hook(Box::new(|_| {
        REPORTED.fetch_add(1, Ordering::SeqCst);
    }));
    std::thread::scope(|scope| {
        for t in 0..8 {
            scope.spawn(move || {
                for i in 0..300 {
                    let rho = Rho::new(0.01 + f64::from(t * 300 + i) * 1e-4).unwrap();
                    epsilon_for_rho(rho, Delta::new(1e-6).unwrap()).unwrap();
                }
            });
        }
    });
    let before = REPORTED.load(Ordering::SeqCst);
    let caught = std::panic::catch_unwind(|| panic!("reported"));
    assert!(caught.is_err());
    assert_eq!(REPORTED.load(Ordering::SeqCst), before + 1, "the panic reached the process's hook");
}

//! `slipway-scheduler`: not implemented yet; exits with an explanation instead of idling.

fn main() {
    eprintln!(
        "slipway-scheduler: no sweeps are implemented yet (see the scheduler issue); refusing to start"
    );
    std::process::exit(2);
}

//! The server clock: the only source of "now" (SPEC rule 3). The system clock
//! for production; a simulated clock, moved only by `POST /v1/test_clock/advance`,
//! for tests and demos. Instants are truncated to microseconds, the precision
//! the stores keep, and never go backwards.

use chrono::{DateTime, SubsecRound, Utc};
use credstack_core::Instant;
use std::sync::Mutex;

pub struct Clock {
    simulated: bool,
    /// The simulated instant, or the last instant handed out by the system clock.
    last: Mutex<Instant>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock {
            simulated: false,
            last: Mutex::new(DateTime::<Utc>::MIN_UTC),
        }
    }

    pub fn simulated(start: Instant) -> Clock {
        Clock {
            simulated: true,
            last: Mutex::new(start.trunc_subsecs(6)),
        }
    }

    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    pub fn now(&self) -> Instant {
        let mut last = self.last.lock().expect("clock lock");
        if !self.simulated {
            *last = (*last).max(Utc::now().trunc_subsecs(6));
        }
        *last
    }

    /// Moves the simulated clock forward to `to`. Refuses the system clock
    /// and any move backwards.
    pub fn advance(&self, to: Instant) -> Result<Instant, AdvanceError> {
        if !self.simulated {
            return Err(AdvanceError::NotSimulated);
        }
        let mut last = self.last.lock().expect("clock lock");
        let to = to.trunc_subsecs(6);
        if to < *last {
            return Err(AdvanceError::Backwards);
        }
        *last = to;
        Ok(to)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum AdvanceError {
    NotSimulated,
    Backwards,
}

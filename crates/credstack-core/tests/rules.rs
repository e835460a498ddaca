//! Example tests, one or more per SPEC section 2 rule, named after the rule.
//! Each runs a short scenario through the wallet and compares decisions,
//! balances and the exact ledger lines (`"<occurred_at> <type> <grant> <amount>"`)
//! with what the rule says. Every command also re-checks rules 15 and 16.

use chrono::{Duration, SecondsFormat};
use credstack_core::{
    Allocation, Amount, Changes, DebitId, Entry, EntryKind, Grant, GrantId, GrantStatus,
    GrantTerms, HoldEnd, HoldId, Instant, Interval, Period, Purpose, Rejection, Scale, Wallet,
};

// ---- helpers -------------------------------------------------------------------

fn scale() -> Scale {
    Scale::new(2).unwrap()
}

fn at(text: &str) -> Instant {
    text.parse().unwrap()
}

/// An amount at scale 2.
fn a(text: &str) -> Amount {
    Amount::parse(text, scale()).unwrap()
}

fn days(n: i64) -> Duration {
    Duration::days(n)
}

/// Plain terms: default priority of the purpose, effective at `effective_at`,
/// no expiry, no recurrence. Tests adjust fields with struct update syntax.
fn terms(amount: &str, purpose: Purpose, effective_at: Instant) -> GrantTerms {
    GrantTerms {
        amount: a(amount),
        purpose,
        priority: purpose.default_priority(),
        effective_at,
        expires_at: None,
        recurrence: None,
        rollover_max: Amount::ZERO,
    }
}

fn every(interval: Interval, count: u32) -> Option<Period> {
    Some(Period::new(interval, count).unwrap())
}

/// One ledger line: `2025-02-28T10:00:00Z renewal g2 100`.
fn line(entry: &Entry) -> String {
    let grant = match entry.grant {
        Some(GrantId(id)) => format!("g{id}"),
        None => "debt".to_string(),
    };
    format!(
        "{} {} {} {}",
        entry
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        entry.kind.as_str(),
        grant,
        entry.amount.format(scale())
    )
}

fn lines(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(line).collect()
}

/// `[("g1", "50"), ("debt", "70")]`
fn split(allocations: &[Allocation]) -> Vec<(String, String)> {
    allocations
        .iter()
        .map(|al| {
            let grant = match al.grant {
                Some(GrantId(id)) => format!("g{id}"),
                None => "debt".to_string(),
            };
            (grant, al.amount.format(scale()))
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(g, x)| (g.to_string(), x.to_string()))
        .collect()
}

/// A wallet with its whole ledger and its finished grants and holds, which
/// checks rules 15 and 16 after every command.
struct Book {
    wallet: Wallet,
    now: Instant,
    ledger: Vec<Entry>,
    /// Entries of the last command.
    last: Vec<Entry>,
    finished: Vec<Grant>,
    finished_holds: Vec<(HoldId, HoldEnd, Instant)>,
    /// Grants are g1, g2, ... in creation order; debits and holds count from 1001.
    next_grant: u128,
    next_id: u128,
}

impl Book {
    fn new(now: Instant) -> Book {
        Book {
            wallet: Wallet::new(Amount::ZERO),
            now,
            ledger: Vec::new(),
            last: Vec::new(),
            finished: Vec::new(),
            finished_holds: Vec::new(),
            next_grant: 0,
            next_id: 1000,
        }
    }

    fn id(&mut self) -> u128 {
        self.next_id += 1;
        self.next_id
    }

    /// Moves the clock (forward only) without touching the wallet.
    fn set_now(&mut self, now: Instant) {
        assert!(now >= self.now, "time only moves forward");
        self.now = now;
    }

    fn run<T>(&mut self, command: impl FnOnce(&mut Wallet, Instant, &mut Changes) -> T) -> T {
        let mut changes = Changes::default();
        let result = command(&mut self.wallet, self.now, &mut changes);
        self.last = changes.entries.clone();
        self.ledger.extend(changes.entries);
        self.finished.extend(changes.finished_grants);
        self.finished_holds.extend(
            changes
                .finished_holds
                .into_iter()
                .map(|(hold, end, at)| (hold.id, end, at)),
        );
        self.check();
        result
    }

    /// A read at `now` (rule 11): materialise and return what it recorded.
    fn read_at(&mut self, now: Instant) -> Vec<String> {
        self.set_now(now);
        self.run(|w, now, c| w.materialise(now, c));
        lines(&self.last)
    }

    fn try_grant(&mut self, terms: GrantTerms) -> Result<GrantId, Rejection> {
        self.next_grant += 1;
        let id = GrantId(self.next_grant);
        self.run(|w, now, c| w.add_grant(id, terms, now, c))
            .map(|()| id)
    }

    fn grant(&mut self, terms: GrantTerms) -> GrantId {
        self.try_grant(terms).expect("grant accepted")
    }

    fn debit(&mut self, amount: &str) -> Result<Vec<Allocation>, Rejection> {
        let id = DebitId(self.id());
        self.run(|w, now, c| w.debit(id, a(amount), now, c))
    }

    fn hold(&mut self, amount: &str, seconds: i64) -> Result<HoldId, Rejection> {
        let id = HoldId(self.id());
        let expires_at = self.now + Duration::seconds(seconds);
        self.run(|w, now, c| w.place_hold(id, a(amount), expires_at, now, c))
            .map(|()| id)
    }

    fn capture(&mut self, hold: HoldId, amount: &str) -> Result<Vec<Allocation>, Rejection> {
        let id = DebitId(self.id());
        self.run(|w, now, c| w.capture(hold, a(amount), id, now, c))
    }

    fn release(&mut self, hold: HoldId) -> Result<(), Rejection> {
        self.run(|w, now, c| w.release(hold, now, c))
    }

    fn void(&mut self, grant: GrantId) -> Result<(), Rejection> {
        self.run(|w, now, c| w.void_grant(grant, now, c))
    }

    fn set_limit(&mut self, limit: &str) -> Result<(), Rejection> {
        self.run(|w, now, c| w.set_overdraft_limit(a(limit), now, c))
    }

    /// A grant, live or finished.
    fn g(&self, id: GrantId) -> &Grant {
        self.wallet
            .grant(id)
            .or_else(|| self.finished.iter().find(|g| g.id == id))
            .expect("known grant")
    }

    fn remaining(&self, id: GrantId) -> String {
        self.g(id).remaining.format(scale())
    }

    fn balance(&self) -> String {
        self.wallet.balance.format(scale())
    }

    fn debt(&self) -> String {
        self.wallet.debt.format(scale())
    }

    fn spendable(&self) -> String {
        self.wallet.spendable().format(scale())
    }

    /// Rules 15 and 16 over everything recorded so far.
    fn check(&self) {
        let w = &self.wallet;
        w.assert_invariants();
        let mut balance = 0;
        let mut previous: Option<Instant> = None;
        for (index, entry) in self.ledger.iter().enumerate() {
            assert_eq!(entry.sequence, index as u64 + 1, "gapless from 1");
            assert!(!entry.amount.is_zero());
            balance += entry.amount.atomic();
            assert_eq!(entry.balance_after.atomic(), balance, "balance_after");
            assert!(previous.is_none_or(|p| p <= entry.occurred_at));
            assert!(entry.occurred_at <= self.now);
            previous = Some(entry.occurred_at);
        }
        assert_eq!(w.last_sequence, self.ledger.len() as u64);
        assert_eq!(balance, w.balance.atomic(), "balance = sum of entries");
        let grants: Vec<&Grant> = w.grants.iter().chain(&self.finished).collect();
        let remainders: i64 = grants.iter().map(|g| g.remaining.atomic()).sum();
        assert_eq!(remainders - w.debt.atomic(), w.balance.atomic());
        assert!(!w.debt.is_negative() && w.debt <= w.overdraft_limit);
        for g in grants {
            assert!(!g.remaining.is_negative());
            let sum: i64 = self
                .ledger
                .iter()
                .filter(|e| e.grant == Some(g.id))
                .map(|e| e.amount.atomic())
                .sum();
            assert_eq!(sum, g.remaining.atomic(), "entries of {:?}", g.id);
        }
        let debt: i64 = self
            .ledger
            .iter()
            .filter(|e| e.grant.is_none())
            .map(|e| e.amount.atomic())
            .sum();
        assert_eq!(debt, -w.debt.atomic(), "entries of debt");
    }
}

fn t0() -> Instant {
    at("2025-03-03T09:00:00Z")
}

fn insufficient(requested: &str, spendable: &str) -> Rejection {
    Rejection::InsufficientBalance {
        requested: a(requested),
        spendable: a(spendable),
    }
}

// ---- amounts and time ---------------------------------------------------------------

#[test]
fn rule_01_maximum_amounts_never_overflow() {
    // Scale 6: 10^12 whole units is 10^18 atomic units, the largest input.
    let max = Amount::parse("1000000000000", Scale::new(6).unwrap()).unwrap();
    let start = t0();
    let mut wallet = Wallet::new(max);
    let mut changes = Changes::default();
    let mut accepted = 0;
    for id in 1..=6 {
        let terms = GrantTerms {
            amount: max,
            purpose: Purpose::Bundled,
            priority: 20,
            effective_at: start,
            expires_at: None,
            recurrence: every(Interval::Day, 1),
            rollover_max: max,
        };
        match wallet.add_grant(GrantId(id), terms, start, &mut changes) {
            Ok(()) => accepted += 1,
            Err(rejection) => assert_eq!(rejection, Rejection::CapacityExceeded),
        }
    }
    assert!(accepted >= 1);
    // Cycle 2 starts with amount + carried: each grant at its largest cycle.
    let mut now = start + days(1);
    wallet.materialise(now, &mut changes);
    // Reserve everything just before the next renewal: held balance is kept
    // across the renewal on top of the new cycle.
    now += Duration::hours(23);
    let mut hold_id = 0;
    loop {
        let spendable = wallet.spendable().min(max);
        if !spendable.is_positive() {
            break;
        }
        hold_id += 1;
        let expires_at = now + Duration::hours(2);
        wallet
            .place_hold(HoldId(hold_id), spendable, expires_at, now, &mut changes)
            .unwrap();
    }
    // The renewal, then the holds' expiry, then a debit and a release: no
    // arithmetic may overflow or panic on the way (rule 1).
    now += Duration::hours(1);
    wallet.materialise(now, &mut changes);
    wallet.assert_invariants();
    wallet.summary();
    wallet.next_expiry();
    now += Duration::hours(2);
    wallet.materialise(now, &mut changes);
    wallet.assert_invariants();
    wallet.summary();
    wallet.debit(DebitId(1), max, now, &mut changes).unwrap();
    wallet.assert_invariants();
    // A larger overdraft limit may not push the wallet past what it can count.
    let huge = Amount::from_atomic(i64::MAX - 1);
    assert_eq!(
        wallet.set_overdraft_limit(huge, now, &mut changes),
        Err(Rejection::CapacityExceeded)
    );
    wallet.assert_invariants();
    wallet.summary();
}

#[test]
fn rule_02_validity_is_half_open() {
    let mut book = Book::new(t0());
    let expires_at = t0() + days(7);
    let g = book.grant(GrantTerms {
        expires_at: Some(expires_at),
        ..terms("100", Purpose::Paid, t0())
    });
    // Spendable up to the last instant before expires_at...
    book.set_now(expires_at - Duration::microseconds(1));
    assert_eq!(book.spendable(), "100");
    assert_eq!(split(&book.debit("40").unwrap()), pairs(&[("g1", "40")]));
    // ...and not at expires_at.
    book.set_now(expires_at);
    assert_eq!(book.debit("0.01"), Err(insufficient("0.01", "0")));
    assert_eq!(book.g(g).status, GrantStatus::Expired);
    // A scheduled grant is not spendable before effective_at, and is at it.
    let starts = expires_at + Duration::hours(1);
    book.grant(terms("10", Purpose::Paid, starts));
    book.set_now(starts - Duration::microseconds(1));
    assert_eq!(book.debit("10"), Err(insufficient("10", "0")));
    book.set_now(starts);
    assert!(book.debit("10").is_ok());
}

#[test]
fn rule_03_effective_at_never_in_the_past() {
    let mut book = Book::new(t0());
    let past = book.try_grant(terms("1", Purpose::Paid, t0() - Duration::seconds(1)));
    assert!(matches!(
        past,
        Err(Rejection::Invalid {
            field: "effective_at",
            ..
        })
    ));
    let backwards = book.try_grant(GrantTerms {
        expires_at: Some(t0()),
        ..terms("1", Purpose::Paid, t0())
    });
    assert!(matches!(
        backwards,
        Err(Rejection::Invalid {
            field: "expires_at",
            ..
        })
    ));
    let scheduled = book.grant(terms("5", Purpose::Paid, t0() + days(1)));
    assert_eq!(book.g(scheduled).status, GrantStatus::Scheduled);
    assert_eq!(book.balance(), "0");
    assert!(
        book.ledger.is_empty(),
        "a rejected or scheduled grant records nothing yet"
    );
}

// ---- drawdown -------------------------------------------------------------------------

#[test]
fn rule_04_drawdown_order_priority_then_cycle_end_then_effective_at() {
    let mut book = Book::new(t0());
    let later = t0() + Duration::hours(1);
    // (id, terms) in creation order; the comment gives its drawdown key.
    let g1 = book.grant(terms("1", Purpose::Paid, t0())); // 30, never
    let g2 = book.grant(GrantTerms {
        expires_at: Some(t0() + days(10)),
        ..terms("1", Purpose::Bundled, t0())
    }); // 20, +10d
    let g3 = book.grant(GrantTerms {
        expires_at: Some(t0() + days(5)),
        ..terms("1", Purpose::Bundled, t0())
    }); // 20, +5d
    let g4 = book.grant(terms("1", Purpose::Bundled, later)); // 20, never, later
    let g5 = book.grant(terms("1", Purpose::Bundled, t0())); // 20, never, t0
    let g6 = book.grant(GrantTerms {
        recurrence: every(Interval::Day, 1),
        expires_at: Some(t0() + days(30)),
        ..terms("1", Purpose::Bundled, t0())
    }); // 20, cycle ends at the renewal +1d (not at expiry +30d)
    let g7 = book.grant(GrantTerms {
        expires_at: Some(t0() + days(60)),
        ..terms("1", Purpose::Promotional, t0())
    }); // 10, +60d
    let g8 = book.grant(GrantTerms {
        priority: 25,
        ..terms("1", Purpose::Promotional, t0())
    }); // 25, never
    let g9 = book.grant(terms("1", Purpose::Bundled, t0())); // 20, never, t0, id after g5
    book.set_now(later);
    let order: Vec<GrantId> = book
        .wallet
        .grants_in_drawdown_order()
        .iter()
        .map(|g| g.id)
        .collect();
    let expected = vec![g7, g6, g3, g2, g5, g9, g4, g8, g1];
    // g4 is still scheduled until materialised; after a read it sorts by effective_at.
    assert_eq!(book.read_at(later), vec!["2025-03-03T10:00:00Z grant g4 1"]);
    let order_after: Vec<GrantId> = book
        .wallet
        .grants_in_drawdown_order()
        .iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(order_after, expected);
    assert_eq!(order.len(), expected.len());
    // A debit takes from them in that order (rule 7: allocations in order).
    let allocations = book.debit("8.5").unwrap();
    let ids = |gs: &[GrantId]| -> Vec<(String, String)> {
        gs.iter()
            .map(|g| (format!("g{}", g.0), "1".to_string()))
            .collect()
    };
    let mut want = ids(&expected[..8]);
    want.push((format!("g{}", g1.0), "0.5".to_string()));
    assert_eq!(split(&allocations), want);
    assert_eq!(book.balance(), "0.5");
    assert_eq!(book.last.last().unwrap().balance_after, a("0.5"));
}

#[test]
fn rule_04_default_priority_by_purpose() {
    assert_eq!(Purpose::Promotional.default_priority(), 10);
    assert_eq!(Purpose::Bundled.default_priority(), 20);
    assert_eq!(Purpose::Paid.default_priority(), 30);
    // An explicit priority beats purpose: a paid grant at priority 5 goes first.
    let mut book = Book::new(t0());
    book.grant(terms("10", Purpose::Promotional, t0()));
    book.grant(GrantTerms {
        priority: 5,
        ..terms("10", Purpose::Paid, t0())
    });
    assert_eq!(
        split(&book.debit("15").unwrap()),
        pairs(&[("g2", "10"), ("g1", "5")])
    );
    let too_high = book.try_grant(GrantTerms {
        priority: 101,
        ..terms("1", Purpose::Paid, t0())
    });
    assert!(matches!(
        too_high,
        Err(Rejection::Invalid {
            field: "priority",
            ..
        })
    ));
}

#[test]
fn rule_04_seed_002_worked_example() {
    let mut book = Book::new(t0());
    let bundled = book.grant(GrantTerms {
        recurrence: every(Interval::Month, 1),
        ..terms("1000000", Purpose::Bundled, t0())
    });
    let promotional = book.grant(GrantTerms {
        expires_at: Some(t0() + days(30)),
        ..terms("100000", Purpose::Promotional, t0())
    });
    let paid = book.grant(terms("500000", Purpose::Paid, t0()));
    assert_eq!(book.balance(), "1600000");
    let summary = book.wallet.summary();
    assert_eq!(
        (summary.promotional, summary.bundled, summary.paid),
        (a("100000"), a("1000000"), a("500000"))
    );
    // The promotional credit, expiring soonest and at priority 10, burns first.
    book.set_now(t0() + days(1));
    assert_eq!(
        split(&book.debit("60000").unwrap()),
        pairs(&[("g2", "60000")])
    );
    // Then the bundled allowance...
    assert_eq!(
        split(&book.debit("240000").unwrap()),
        pairs(&[("g2", "40000"), ("g1", "200000")])
    );
    // ...and only then paid credit.
    book.set_now(t0() + days(2));
    assert_eq!(
        split(&book.debit("900000").unwrap()),
        pairs(&[("g1", "800000"), ("g3", "100000")])
    );
    assert_eq!(
        (
            book.remaining(promotional),
            book.remaining(bundled),
            book.remaining(paid)
        ),
        ("0".into(), "0".into(), "400000".into())
    );
    assert_eq!(book.balance(), "400000");
    assert_eq!(
        lines(&book.last),
        vec![
            "2025-03-05T09:00:00Z debit g1 -800000",
            "2025-03-05T09:00:00Z debit g3 -100000",
        ]
    );
    // Next month the bundled allowance renews; paid credit is untouched.
    // (The promotional credit expires on 2025-04-02 with nothing left: no entry.)
    assert_eq!(
        book.read_at(t0() + days(40)),
        vec!["2025-04-03T09:00:00Z renewal g1 1000000"]
    );
    assert_eq!(book.g(promotional).status, GrantStatus::Expired);
    assert_eq!(book.balance(), "1400000");
}

#[test]
fn rule_05_debit_is_all_or_nothing() {
    let mut book = Book::new(t0());
    book.grant(terms("60", Purpose::Promotional, t0()));
    book.grant(terms("40", Purpose::Paid, t0()));
    let before = book.wallet.clone();
    let sequence = book.wallet.last_sequence;
    assert_eq!(book.debit("100.01"), Err(insufficient("100.01", "100")));
    assert_eq!(book.wallet, before, "a refused debit changes nothing");
    assert_eq!(book.wallet.last_sequence, sequence);
    assert!(book.last.is_empty());
    assert_eq!(book.debit("100").map(|al| al.len()), Ok(2));
    assert_eq!(book.balance(), "0");
    // With an overdraft, the limit is part of what is spendable.
    book.set_limit("50").unwrap();
    assert_eq!(book.debit("50.01"), Err(insufficient("50.01", "50")));
    assert_eq!(book.balance(), "0");
    assert_eq!(split(&book.debit("50").unwrap()), pairs(&[("debt", "50")]));
    assert_eq!(book.debit("0.01"), Err(insufficient("0.01", "0")));
}

#[test]
fn rule_06_overdraft_and_repayment_from_new_grant_and_renewal() {
    let mut book = Book::new(t0());
    book.set_limit("100").unwrap();
    let monthly = book.grant(GrantTerms {
        recurrence: every(Interval::Month, 1),
        ..terms("50", Purpose::Bundled, t0())
    });
    assert_eq!(
        split(&book.debit("120").unwrap()),
        pairs(&[("g1", "50"), ("debt", "70")])
    );
    assert_eq!((book.balance(), book.debt()), ("-70".into(), "70".into()));
    assert_eq!(book.debit("30.01"), Err(insufficient("30.01", "30")));
    // The overdraft limit cannot drop below the debt.
    assert_eq!(book.set_limit("69.99"), Err(Rejection::OverdraftBelowDebt));
    // A new grant first repays the debt.
    book.set_now(t0() + days(3));
    let topup = book.grant(terms("30", Purpose::Paid, book.now));
    assert_eq!(
        lines(&book.last),
        vec![
            "2025-03-06T09:00:00Z grant g2 30",
            "2025-03-06T09:00:00Z repayment g2 -30",
            "2025-03-06T09:00:00Z repayment debt 30",
        ]
    );
    assert_eq!((book.balance(), book.debt()), ("-40".into(), "40".into()));
    assert_eq!(book.remaining(topup), "0");
    // A scheduled grant repays when it arrives, dated when it arrives.
    book.grant(terms("15", Purpose::Paid, t0() + days(10)));
    // The renewal repays the rest, dated at the renewal, read much later.
    assert_eq!(
        book.read_at(t0() + days(45)),
        vec![
            "2025-03-13T09:00:00Z grant g3 15",
            "2025-03-13T09:00:00Z repayment g3 -15",
            "2025-03-13T09:00:00Z repayment debt 15",
            "2025-04-03T09:00:00Z renewal g1 50",
            "2025-04-03T09:00:00Z repayment g1 -25",
            "2025-04-03T09:00:00Z repayment debt 25",
        ]
    );
    assert_eq!((book.balance(), book.debt()), ("25".into(), "0".into()));
    assert_eq!(book.remaining(monthly), "25");
}

#[test]
fn rule_07_debit_shows_split_and_balance_after() {
    let mut book = Book::new(t0());
    book.grant(terms("3", Purpose::Paid, t0()));
    book.grant(terms("2", Purpose::Bundled, t0()));
    let allocations = book.debit("4.5").unwrap();
    assert_eq!(split(&allocations), pairs(&[("g2", "2"), ("g1", "2.5")]));
    assert_eq!(
        lines(&book.last),
        vec![
            "2025-03-03T09:00:00Z debit g2 -2",
            "2025-03-03T09:00:00Z debit g1 -2.5",
        ]
    );
    assert_eq!(book.last.last().unwrap().balance_after, a("0.5"));
    assert_eq!(book.last[0].kind, EntryKind::Debit);
}

// ---- expiry, recurrence, rollover ---------------------------------------------------

#[test]
fn rule_08_expiry_entry_dated_exactly_expires_at() {
    let mut book = Book::new(t0());
    let expires_at = at("2025-03-10T17:45:12.345678Z");
    let g = book.grant(GrantTerms {
        expires_at: Some(expires_at),
        ..terms("100", Purpose::Promotional, t0())
    });
    book.debit("30").unwrap();
    assert_eq!(
        book.wallet.next_expiry(),
        Some((expires_at, a("70"))),
        "next_expiry announces it"
    );
    // Read long after: the forfeit is dated at expires_at, not at the read.
    assert_eq!(
        book.read_at(t0() + days(30)),
        vec!["2025-03-10T17:45:12.345678Z expiry g1 -70"]
    );
    assert_eq!(book.last[0].occurred_at, expires_at);
    assert_eq!(book.g(g).status, GrantStatus::Expired);
    assert_eq!(book.g(g).ended_at, Some(expires_at));
    assert_eq!(book.balance(), "0");
    // An expired grant cannot be voided.
    assert!(book.void(g).is_err());
}

#[test]
fn rule_09_monthly_from_jan_31() {
    let cases = [
        (
            "2025-01-31T10:00:00Z",
            [
                "2025-02-28T10:00:00Z",
                "2025-03-31T10:00:00Z",
                "2025-04-30T10:00:00Z",
                "2025-05-31T10:00:00Z",
            ],
        ),
        (
            "2024-01-31T10:00:00Z",
            [
                "2024-02-29T10:00:00Z",
                "2024-03-31T10:00:00Z",
                "2024-04-30T10:00:00Z",
                "2024-05-31T10:00:00Z",
            ],
        ),
    ];
    for (anchor, renewals) in cases {
        let mut book = Book::new(at(anchor));
        let g = book.grant(GrantTerms {
            recurrence: every(Interval::Month, 1),
            ..terms("10", Purpose::Bundled, at(anchor))
        });
        assert_eq!(book.g(g).next_renewal_at(), Some(at(renewals[0])));
        assert_eq!(book.g(g).cycle_end(), Some(at(renewals[0])));
        let read = book.read_at(at(renewals[3]) + Duration::hours(1));
        let expected: Vec<String> = renewals
            .iter()
            .flat_map(|r| [format!("{r} expiry g1 -10"), format!("{r} renewal g1 10")])
            .collect();
        assert_eq!(read, expected, "anchored at {anchor}");
        assert_eq!(book.g(g).cycle, 5);
    }
    // Every renewal is computed from the anchor, also for other intervals.
    let mut book = Book::new(at("2024-02-29T12:00:00Z"));
    book.grant(GrantTerms {
        recurrence: every(Interval::Year, 1),
        rollover_max: a("10"),
        ..terms("10", Purpose::Bundled, book.now)
    });
    assert_eq!(
        book.read_at(at("2028-03-01T00:00:00Z")),
        vec![
            "2025-02-28T12:00:00Z renewal g1 10",
            "2026-02-28T12:00:00Z expiry g1 -10",
            "2026-02-28T12:00:00Z renewal g1 10",
            "2027-02-28T12:00:00Z expiry g1 -10",
            "2027-02-28T12:00:00Z renewal g1 10",
            "2028-02-29T12:00:00Z expiry g1 -10",
            "2028-02-29T12:00:00Z renewal g1 10",
        ]
    );
}

#[test]
fn rule_10_rollover_carries_min_remaining_rollover_max() {
    let mut book = Book::new(t0());
    let g = book.grant(GrantTerms {
        recurrence: every(Interval::Week, 1),
        rollover_max: a("30"),
        ..terms("100", Purpose::Bundled, t0())
    });
    // remaining 50 > rollover 30: carry 30, forfeit 20, start with 130.
    book.debit("50").unwrap();
    assert_eq!(book.wallet.next_expiry(), Some((t0() + days(7), a("20"))));
    assert_eq!(
        book.read_at(t0() + days(7)),
        vec![
            "2025-03-10T09:00:00Z expiry g1 -20",
            "2025-03-10T09:00:00Z renewal g1 100",
        ]
    );
    assert_eq!(book.remaining(g), "130");
    // remaining 130: carry 30, forfeit 100, start with 130 again (never more).
    book.read_at(t0() + days(14));
    assert_eq!(book.remaining(g), "130");
    // remaining 10 < rollover 30: carry all 10, nothing forfeited.
    book.debit("120").unwrap();
    assert_eq!(
        book.read_at(t0() + days(21)),
        vec!["2025-03-24T09:00:00Z renewal g1 100"]
    );
    assert_eq!(book.remaining(g), "110");
    // rollover_max defaults to 0: everything unspent is forfeited.
    let mut book = Book::new(t0());
    book.grant(GrantTerms {
        recurrence: every(Interval::Day, 2),
        ..terms("5", Purpose::Bundled, t0())
    });
    assert_eq!(
        book.read_at(t0() + days(2)),
        vec![
            "2025-03-05T09:00:00Z expiry g1 -5",
            "2025-03-05T09:00:00Z renewal g1 5",
        ]
    );
    // rollover_max is only for recurring grants.
    let rollover_without_recurrence = book.try_grant(GrantTerms {
        rollover_max: a("1"),
        ..terms("5", Purpose::Bundled, book.now)
    });
    assert!(matches!(
        rollover_without_recurrence,
        Err(Rejection::Invalid {
            field: "rollover_max",
            ..
        })
    ));
}

#[test]
fn rule_10_no_renewal_at_or_after_expires_at() {
    // Expiring exactly at the second renewal: one renewal, then the expiry.
    let mut book = Book::new(t0());
    let g = book.grant(GrantTerms {
        recurrence: every(Interval::Month, 1),
        expires_at: Some(t0() + days(61)),
        rollover_max: a("100"),
        ..terms("10", Purpose::Bundled, t0())
    });
    assert_eq!(
        book.g(g).terms.renewal_after(2),
        None,
        "2025-05-03 is expires_at"
    );
    assert_eq!(
        book.read_at(t0() + days(400)),
        vec![
            "2025-04-03T09:00:00Z renewal g1 10",
            "2025-05-03T09:00:00Z expiry g1 -20",
        ]
    );
    assert_eq!(book.g(g).status, GrantStatus::Expired);
    // Expiring just after a renewal: that renewal happens, then the expiry.
    let mut book = Book::new(t0());
    book.grant(GrantTerms {
        recurrence: every(Interval::Day, 1),
        expires_at: Some(t0() + days(2) + Duration::seconds(1)),
        ..terms("10", Purpose::Bundled, t0())
    });
    assert_eq!(
        book.read_at(t0() + days(30)),
        vec![
            "2025-03-04T09:00:00Z expiry g1 -10",
            "2025-03-04T09:00:00Z renewal g1 10",
            "2025-03-05T09:00:00Z expiry g1 -10",
            "2025-03-05T09:00:00Z renewal g1 10",
            "2025-03-05T09:00:01Z expiry g1 -10",
        ]
    );
}

#[test]
fn rule_11_materialise_dates_events_at_scheduled_instant() {
    // Several events fall on one instant T; nobody touches the wallet until
    // days later. Order at T: grant expiries, hold expiries, renewals, arrivals.
    let big_t = t0() + days(1);
    let mut book = Book::new(t0());
    let c = book.grant(GrantTerms {
        recurrence: every(Interval::Day, 1),
        ..terms("10", Purpose::Bundled, t0())
    });
    let ending = book.grant(GrantTerms {
        expires_at: Some(big_t),
        ..terms("40", Purpose::Paid, t0())
    });
    book.grant(terms("40", Purpose::Paid, big_t));
    // Reserves all 10 of g1 (cycle ends at T) and 5 of g2, until T.
    book.hold("15", 86_400).unwrap();
    assert_eq!(book.wallet.next_event_at(), Some(big_t));
    assert_eq!(
        book.read_at(big_t + Duration::hours(60)),
        vec![
            "2025-03-04T09:00:00Z expiry g2 -35",
            "2025-03-04T09:00:00Z expiry g2 -5",
            "2025-03-04T09:00:00Z expiry g1 -10",
            "2025-03-04T09:00:00Z renewal g1 10",
            "2025-03-04T09:00:00Z grant g3 40",
            "2025-03-05T09:00:00Z expiry g1 -10",
            "2025-03-05T09:00:00Z renewal g1 10",
            "2025-03-06T09:00:00Z expiry g1 -10",
            "2025-03-06T09:00:00Z renewal g1 10",
        ]
    );
    assert_eq!(book.finished_holds.len(), 1);
    assert_eq!(book.finished_holds[0].1, HoldEnd::Expired);
    assert_eq!(book.finished_holds[0].2, big_t);
    assert_eq!(book.g(ending).status, GrantStatus::Expired);
    assert_eq!(book.remaining(c), "10");

    // With debt: renewals and arrivals at T, then the repayment.
    let mut book = Book::new(t0());
    book.set_limit("100").unwrap();
    book.grant(GrantTerms {
        recurrence: every(Interval::Day, 1),
        ..terms("10", Purpose::Bundled, t0())
    });
    book.debit("60").unwrap();
    book.grant(terms("30", Purpose::Paid, big_t));
    assert_eq!(
        book.read_at(big_t + Duration::hours(1)),
        vec![
            "2025-03-04T09:00:00Z renewal g1 10",
            "2025-03-04T09:00:00Z grant g2 30",
            "2025-03-04T09:00:00Z repayment g1 -10",
            "2025-03-04T09:00:00Z repayment g2 -30",
            "2025-03-04T09:00:00Z repayment debt 40",
        ]
    );
    assert_eq!(book.debt(), "10");
}

#[test]
fn rule_11_reads_at_any_pace_see_the_same_ledger() {
    let scenario = |book: &mut Book| {
        book.set_limit("20").unwrap();
        book.grant(GrantTerms {
            recurrence: every(Interval::Week, 1),
            rollover_max: a("3"),
            expires_at: Some(t0() + days(40)),
            ..terms("10", Purpose::Bundled, t0())
        });
        book.grant(GrantTerms {
            recurrence: every(Interval::Day, 3),
            ..terms("4", Purpose::Promotional, t0() + days(2))
        });
        book.debit("25").unwrap();
        book.hold("2", 3600).unwrap();
    };
    let end = t0() + days(50);
    let mut once = Book::new(t0());
    scenario(&mut once);
    once.read_at(end);
    let mut hourly = Book::new(t0());
    scenario(&mut hourly);
    let mut now = t0();
    while now < end {
        now = (now + Duration::hours(1)).min(end);
        hourly.read_at(now);
    }
    assert_eq!(lines(&once.ledger), lines(&hourly.ledger));
    assert_eq!(once.ledger, hourly.ledger);
    assert_eq!(once.wallet, hourly.wallet);
}

// ---- holds --------------------------------------------------------------------------

#[test]
fn rule_12_hold_reserves_balance() {
    let mut book = Book::new(t0());
    let g = book.grant(terms("100", Purpose::Paid, t0()));
    let hold = book.hold("60", 600).unwrap();
    assert!(book.last.is_empty(), "a hold records no entry");
    let summary = book.wallet.summary();
    assert_eq!(
        (
            summary.balance,
            summary.held,
            summary.available,
            summary.spendable
        ),
        (a("100"), a("60"), a("40"), a("40"))
    );
    assert_eq!(book.g(g).held, a("60"));
    // Held balance is not available to debits or other holds.
    assert_eq!(book.debit("40.01"), Err(insufficient("40.01", "40")));
    assert_eq!(book.hold("40.01", 600), Err(insufficient("40.01", "40")));
    assert_eq!(split(&book.debit("40").unwrap()), pairs(&[("g1", "40")]));
    assert_eq!(book.hold("0.01", 600), Err(insufficient("0.01", "0")));
    // On expiry the reservation returns.
    book.set_now(t0() + Duration::seconds(599));
    assert_eq!(book.spendable(), "0");
    assert_eq!(
        book.read_at(t0() + Duration::seconds(600)),
        Vec::<String>::new()
    );
    assert_eq!(book.spendable(), "60");
    assert_eq!(
        book.finished_holds,
        vec![(hold, HoldEnd::Expired, t0() + Duration::seconds(600))]
    );
    assert_eq!(book.capture(hold, "1"), Err(Rejection::HoldNotFound));
    // A hold may use the overdraft too.
    book.set_limit("10").unwrap();
    assert_eq!(book.hold("70.01", 60), Err(insufficient("70.01", "70")));
    book.hold("70", 60).unwrap();
    assert_eq!(book.set_limit("9.99"), Err(Rejection::OverdraftBelowDebt));
}

#[test]
fn rule_12_hold_lasts_at_most_24_hours() {
    let mut book = Book::new(t0());
    book.grant(terms("100", Purpose::Paid, t0()));
    let invalid = |r: Result<HoldId, Rejection>| {
        matches!(
            r,
            Err(Rejection::Invalid {
                field: "expires_in_seconds",
                ..
            })
        )
    };
    assert!(invalid(book.hold("1", 0)));
    assert!(invalid(book.hold("1", 86_401)));
    // Even a fraction of a second past 24 hours is too long.
    let id = HoldId(999);
    let too_late = t0() + Duration::hours(24) + Duration::microseconds(1);
    let r = book.run(|w, now, c| w.place_hold(id, a("1"), too_late, now, c));
    assert!(invalid(r.map(|()| id)));
    assert!(book.hold("1", 86_400).is_ok());
    assert!(book.hold("1", 1).is_ok());
}

#[test]
fn rule_13_capture_less_or_equal_takes_what_was_reserved() {
    let mut book = Book::new(t0());
    book.grant(terms("50", Purpose::Promotional, t0()));
    book.grant(terms("50", Purpose::Paid, t0()));
    let hold = book.hold("80", 600).unwrap();
    // Capture less: from the reserved grants in order, the rest released.
    assert_eq!(
        split(&book.capture(hold, "60").unwrap()),
        pairs(&[("g1", "50"), ("g2", "10")])
    );
    assert_eq!(book.finished_holds, vec![(hold, HoldEnd::Captured, t0())]);
    assert_eq!(
        (book.balance(), book.spendable()),
        ("40".into(), "40".into())
    );
    assert_eq!(book.capture(hold, "1"), Err(Rejection::HoldNotFound));
    assert_eq!(book.release(hold), Err(Rejection::HoldNotFound));
    // Capture exactly what was held.
    let hold = book.hold("40", 600).unwrap();
    assert_eq!(
        split(&book.capture(hold, "40").unwrap()),
        pairs(&[("g2", "40")])
    );
    assert_eq!(book.balance(), "0");
}

#[test]
fn rule_13_capture_after_grant_expired_succeeds() {
    let mut book = Book::new(t0());
    let g = book.grant(GrantTerms {
        expires_at: Some(t0() + Duration::hours(1)),
        ..terms("100", Purpose::Promotional, t0())
    });
    let hold = book.hold("80", 7200).unwrap();
    // At expiry only the unheld part is forfeited.
    assert_eq!(
        book.read_at(t0() + Duration::minutes(90)),
        vec!["2025-03-03T10:00:00Z expiry g1 -20"]
    );
    assert_eq!(book.g(g).status, GrantStatus::Expired);
    assert_eq!(book.spendable(), "0");
    // Capturing up to the held amount still succeeds, from the expired grant;
    // the uncaptured rest of the reservation is then forfeited.
    assert_eq!(
        split(&book.capture(hold, "50").unwrap()),
        pairs(&[("g1", "50")])
    );
    assert_eq!(
        lines(&book.last),
        vec![
            "2025-03-03T10:30:00Z debit g1 -50",
            "2025-03-03T10:30:00Z expiry g1 -30",
        ]
    );
    assert_eq!(book.balance(), "0");
    assert!(book.wallet.grant(g).is_none(), "the grant is final now");
    // The same for a voided grant.
    let v = book.grant(terms("10", Purpose::Paid, book.now));
    let hold = book.hold("10", 600).unwrap();
    book.void(v).unwrap();
    assert!(book.last.is_empty(), "everything was held");
    assert_eq!(
        split(&book.capture(hold, "10").unwrap()),
        pairs(&[("g2", "10")])
    );
    assert_eq!(book.g(v).status, GrantStatus::Voided);
}

#[test]
fn rule_13_capture_more_than_held_debits_excess_or_402_leaving_hold() {
    let mut book = Book::new(t0());
    book.grant(terms("100", Purpose::Promotional, t0()));
    book.grant(terms("50", Purpose::Paid, t0()));
    let hold = book.hold("120", 600).unwrap();
    let before = book.wallet.clone();
    // Excess 80 > spendable 30: refused, hold and wallet untouched.
    assert_eq!(book.capture(hold, "200"), Err(insufficient("80", "30")));
    assert_eq!(book.wallet, before);
    assert!(book.last.is_empty());
    assert_eq!(book.wallet.hold(hold).map(|h| h.amount), Some(a("120")));
    // Excess 30 fits: the reserved part, then the excess, merged per grant.
    assert_eq!(
        split(&book.capture(hold, "150").unwrap()),
        pairs(&[("g1", "100"), ("g2", "50")])
    );
    assert_eq!(book.balance(), "0");
    // The excess may go into the overdraft, like a debit.
    book.set_limit("5").unwrap();
    book.grant(terms("10", Purpose::Paid, book.now));
    let hold = book.hold("10", 600).unwrap();
    assert_eq!(book.capture(hold, "15.01"), Err(insufficient("5.01", "5")));
    assert_eq!(
        split(&book.capture(hold, "15").unwrap()),
        pairs(&[("g3", "10"), ("debt", "5")])
    );
    assert_eq!((book.balance(), book.debt()), ("-5".into(), "5".into()));
}

#[test]
fn rule_13_release_forfeits_reservation_of_ended_grant() {
    let mut book = Book::new(t0());
    let g = book.grant(GrantTerms {
        expires_at: Some(t0() + Duration::hours(1)),
        ..terms("100", Purpose::Promotional, t0())
    });
    let live = book.grant(terms("10", Purpose::Paid, t0()));
    let hold = book.hold("75", 7200).unwrap(); // all from g1, drawn first
    assert_eq!(book.g(g).held, a("75"));
    book.set_now(t0() + Duration::minutes(90));
    book.release(hold).unwrap();
    assert_eq!(
        lines(&book.last),
        vec![
            "2025-03-03T10:00:00Z expiry g1 -25",
            "2025-03-03T10:30:00Z expiry g1 -75",
        ]
    );
    assert_eq!(
        book.finished_holds,
        vec![(hold, HoldEnd::Released, book.now)]
    );
    assert_eq!(book.balance(), "10");
    // Release of a reservation of a live grant returns it.
    let hold = book.hold("4", 600).unwrap();
    book.release(hold).unwrap();
    assert!(book.last.is_empty());
    assert_eq!(book.remaining(live), "10");
    assert_eq!(book.spendable(), "10");
    // Expiry of a hold on a voided grant: forfeited as a void, dated at the hold's expiry.
    let hold = book.hold("6", 600).unwrap();
    book.void(live).unwrap();
    assert_eq!(lines(&book.last), vec!["2025-03-03T10:30:00Z void g2 -4"]);
    assert_eq!(
        book.read_at(book.now + days(1)),
        vec!["2025-03-03T10:40:00Z void g2 -6"]
    );
    assert_eq!(book.finished_holds.last().unwrap().0, hold);
    assert_eq!(book.balance(), "0");
}

#[test]
fn rule_13_release_after_renewal_forfeits_reservation_of_previous_cycle() {
    // A hold that outlives its cycle stays capturable, but released it must
    // not flow into the new cycle: the new cycle starts with amount + carried
    // (rule 10), whatever was held across the renewal.
    let mut book = Book::new(t0());
    let g = book.grant(GrantTerms {
        recurrence: every(Interval::Day, 1),
        rollover_max: a("5"),
        ..terms("100", Purpose::Bundled, t0())
    });
    book.set_now(t0() + Duration::hours(23));
    let released = book.hold("60", 7200).unwrap();
    let captured = book.hold("20", 7200).unwrap();
    // Renewal: unheld 20, carry 5, forfeit 15; the 80 held stays reserved.
    assert_eq!(
        book.read_at(t0() + days(1)),
        vec![
            "2025-03-04T09:00:00Z expiry g1 -15",
            "2025-03-04T09:00:00Z renewal g1 100",
        ]
    );
    assert_eq!(book.remaining(g), "185");
    assert_eq!(book.spendable(), "105");
    book.set_now(t0() + days(1) + Duration::minutes(10));
    assert_eq!(
        split(&book.capture(captured, "20").unwrap()),
        pairs(&[("g1", "20")])
    );
    book.release(released).unwrap();
    assert_eq!(
        lines(&book.last),
        vec!["2025-03-04T09:10:00Z expiry g1 -60"]
    );
    assert_eq!(book.remaining(g), "105");
    assert_eq!(book.spendable(), "105");
    // Expiring instead of being released: the same.
    let mut book = Book::new(t0());
    book.grant(GrantTerms {
        recurrence: every(Interval::Day, 1),
        ..terms("100", Purpose::Bundled, t0())
    });
    book.set_now(t0() + Duration::hours(23));
    book.hold("100", 7200).unwrap();
    assert_eq!(
        book.read_at(t0() + days(2)),
        vec![
            "2025-03-04T09:00:00Z renewal g1 100",
            "2025-03-04T10:00:00Z expiry g1 -100",
            "2025-03-05T09:00:00Z expiry g1 -100",
            "2025-03-05T09:00:00Z renewal g1 100",
        ]
    );
    assert_eq!(book.balance(), "100");
    // A hold placed after the renewal returns to the current cycle as usual.
    let hold = book.hold("30", 60).unwrap();
    book.release(hold).unwrap();
    assert!(book.last.is_empty());
    assert_eq!(book.balance(), "100");
}

// ---- voids and the ledger -------------------------------------------------------------

#[test]
fn rule_14_void_forfeits_unheld_and_ends_recurrence() {
    let mut book = Book::new(t0());
    let g = book.grant(GrantTerms {
        recurrence: every(Interval::Day, 1),
        rollover_max: a("100"),
        ..terms("100", Purpose::Promotional, t0())
    });
    let hold = book.hold("30", 7200).unwrap();
    book.set_now(t0() + Duration::hours(1));
    book.void(g).unwrap();
    assert_eq!(lines(&book.last), vec!["2025-03-03T10:00:00Z void g1 -70"]);
    assert_eq!(book.g(g).status, GrantStatus::Voided);
    assert_eq!(book.g(g).ended_at, Some(book.now));
    assert_eq!(book.g(g).next_renewal_at(), None);
    assert_eq!(book.void(g), Err(Rejection::GrantAlreadyEnded));
    // The held part stays capturable; the rest is forfeited as a void.
    assert_eq!(
        split(&book.capture(hold, "20").unwrap()),
        pairs(&[("g1", "20")])
    );
    assert_eq!(
        lines(&book.last),
        vec![
            "2025-03-03T10:00:00Z debit g1 -20",
            "2025-03-03T10:00:00Z void g1 -10",
        ]
    );
    // No renewal follows.
    assert_eq!(book.read_at(t0() + days(10)), Vec::<String>::new());
    assert_eq!(book.balance(), "0");
    // Voiding a scheduled grant: it never arrives.
    let scheduled = book.grant(terms("5", Purpose::Paid, book.now + days(1)));
    book.void(scheduled).unwrap();
    assert!(book.last.is_empty());
    assert_eq!(book.read_at(book.now + days(2)), Vec::<String>::new());
    assert_eq!(book.g(scheduled).status, GrantStatus::Voided);
    assert_eq!(book.void(GrantId(12345)), Err(Rejection::GrantNotFound));
}

#[test]
fn rule_15_sequences_gapless() {
    let mut book = Book::new(t0());
    book.set_limit("10").unwrap();
    book.grant(GrantTerms {
        recurrence: every(Interval::Day, 1),
        ..terms("5", Purpose::Bundled, t0())
    });
    book.grant(GrantTerms {
        expires_at: Some(t0() + days(3)),
        ..terms("7", Purpose::Promotional, t0())
    });
    // Refused commands in between must not use up sequence numbers.
    assert!(book.debit("1000").is_err());
    book.debit("15").unwrap();
    assert!(book.hold("1000", 60).is_err());
    let hold = book.hold("1", 60).unwrap();
    book.read_at(t0() + days(5));
    assert_eq!(book.release(hold), Err(Rejection::HoldNotFound));
    book.grant(terms("2", Purpose::Paid, book.now));
    let sequences: Vec<u64> = book.ledger.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=book.ledger.len() as u64).collect::<Vec<_>>()
    );
    assert!(book.ledger.len() > 10);
    let kinds: Vec<&str> = book.ledger.iter().map(|e| e.kind.as_str()).collect();
    for kind in ["grant", "renewal", "debit", "expiry", "repayment"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    for kind in [
        "grant",
        "renewal",
        "debit",
        "expiry",
        "void",
        "repayment",
        "adjustment",
    ] {
        assert_eq!(EntryKind::parse(kind).map(EntryKind::as_str), Some(kind));
    }
    assert_eq!(EntryKind::parse("refund"), None);
    // Debt entries have no grant; every grant entry names its grant.
    for entry in &book.ledger {
        match entry.kind {
            EntryKind::Debit | EntryKind::Repayment => {}
            _ => assert!(entry.grant.is_some(), "{}", line(entry)),
        }
    }
}

#[test]
fn rule_16_invariants() {
    // Book::check runs after every command; this scenario visits every kind
    // of change, and checks the wallet's own view and the summary too.
    let mut book = Book::new(at("2025-01-31T00:00:00Z"));
    let start = book.now;
    book.set_limit("50").unwrap();
    let monthly = book.grant(GrantTerms {
        recurrence: every(Interval::Month, 1),
        rollover_max: a("10"),
        ..terms("100", Purpose::Bundled, start)
    });
    let promo = book.grant(GrantTerms {
        expires_at: Some(start + days(20)),
        ..terms("30", Purpose::Promotional, start)
    });
    book.grant(terms("20", Purpose::Paid, start + days(3)));
    let h1 = book.hold("50", 86_400).unwrap();
    book.debit("90").unwrap();
    book.set_now(start + Duration::hours(12));
    book.capture(h1, "60").unwrap();
    let h2 = book.hold("5", 3600).unwrap();
    book.read_at(start + days(25));
    assert_eq!(book.release(h2), Err(Rejection::HoldNotFound));
    book.void(promo).unwrap_err();
    book.read_at(start + days(70));
    book.void(monthly).unwrap();
    book.debit("30").unwrap();
    assert_eq!(book.set_limit("0"), Err(Rejection::OverdraftBelowDebt));
    book.grant(terms("500", Purpose::Paid, book.now));
    book.set_limit("0").unwrap();
    let summary = book.wallet.summary();
    assert_eq!(summary.balance, book.wallet.balance);
    assert_eq!(
        summary.balance.atomic(),
        summary.promotional.atomic() + summary.bundled.atomic() + summary.paid.atomic()
            - summary.debt.atomic()
    );
    assert_eq!(
        summary.available.atomic(),
        summary.balance.atomic() - summary.held.atomic()
    );
    assert_eq!(summary.spendable, book.wallet.spendable());
    assert!(book.ledger.iter().any(|e| e.kind == EntryKind::Void));
    assert!(book.ledger.iter().any(|e| e.kind == EntryKind::Repayment));
    assert!(book.ledger.iter().any(|e| e.kind == EntryKind::Renewal));
    assert!(book.ledger.iter().any(|e| e.kind == EntryKind::Expiry));
}

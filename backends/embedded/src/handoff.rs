//! Long polls parked in the writer, and messages handed to them in the commit that sends them.
//!
//! A receive that is willing to wait does not go back to its caller to wait: it stays with the
//! writer as a waiter. A message sent to a queue where a waiter has room, while no older
//! message is visible there, is inserted already leased to that waiter (received once, a new
//! receipt, hidden for the waiter's visibility timeout) by the transaction that sends it, and
//! the waiter is answered right after that commit. So a hop between two roles of one process
//! costs one commit instead of two (the send, then the lease), and no thread hand-off to wake
//! the receiver only for it to ask the writer again.
//!
//! Whether a queue may hold visible messages is tracked from what the writer commits. When it
//! may (messages sent while no waiter had room, made visible again or redriven; the clock
//! reaching the queue's next hidden message; a commit by another process on the same file),
//! its waiters look with the ordinary lease statement, oldest first, at the end of the
//! transaction. A transaction that rolls back forgets what it handed out and what it learnt.
//!
//! Crash safety is a receive's: a handed-off message is a leased row like any other, received
//! again once its visibility lapses if its holder dies. A waiter whose caller stopped waiting
//! is given nothing; if it stopped between the commit and the answer, its messages are made
//! visible again at once (see `writer`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use como_ports::{Delivery, PortResult, QueueName};
use tokio::sync::oneshot;

use crate::codec::{self, QUEUES, ReceiptKey};
use crate::ops::Output;

/// A receive waiting for messages.
struct Waiter {
    max: usize,
    visibility_ms: i64,
    deadline: Instant,
    /// Taken when it is answered.
    reply: Option<oneshot::Sender<PortResult<Output>>>,
    /// Leased to it by the transaction in progress; answered after its commit.
    got: Vec<Delivery>,
}

impl Waiter {
    /// Answered, or its caller stopped waiting.
    fn gone(&self) -> bool {
        self.reply.as_ref().is_none_or(oneshot::Sender::is_closed)
    }

    fn room(&self) -> usize {
        if self.gone() {
            0
        } else {
            self.max.saturating_sub(self.got.len())
        }
    }

    /// Answers with `deliveries`; gives them back if nobody hears it.
    fn answer(&mut self, deliveries: Vec<Delivery>) -> Result<(), Vec<Delivery>> {
        let Some(reply) = self.reply.take() else {
            return Err(deliveries);
        };
        match reply.send(Ok(Output::Received(deliveries))) {
            Ok(()) => Ok(()),
            Err(Ok(Output::Received(lost))) => Err(lost),
            Err(_) => Err(Vec::new()),
        }
    }
}

/// A lease for a message about to be inserted: whose it is, how long it hides, its token.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    waiter: usize,
    pub visibility_ms: i64,
    pub token: i64,
}

/// The parked receives of every queue, and what the writer knows of each queue.
pub struct Waiters {
    queues: [VecDeque<Waiter>; QUEUES],
    /// False only while the queue is known to hold no visible message: a look found it empty,
    /// and nothing since made a message visible.
    maybe_visible: [bool; QUEUES],
    /// No hidden message of the queue becomes visible by the clock before this (ms); none when
    /// the queue was found holding no message at all. A lower bound, lowered by every write
    /// that hides a message.
    next_visible: [Option<i64>; QUEUES],
    /// splitmix64 state for receipt tokens: they only have to differ from the message's
    /// earlier tokens, which a sequence that does not repeat within 2^64 draws guarantees.
    tokens: u64,
}

impl Waiters {
    pub fn new(seed: u64) -> Self {
        Self {
            queues: std::array::from_fn(|_| VecDeque::new()),
            maybe_visible: [true; QUEUES],
            next_visible: [None; QUEUES],
            tokens: seed,
        }
    }

    /// Keep a receive until messages come for it or `wait` has passed.
    pub fn park(
        &mut self,
        queue: QueueName,
        max: usize,
        visibility_ms: i64,
        wait: Duration,
        reply: oneshot::Sender<PortResult<Output>>,
    ) {
        self.queues[codec::queue_index(queue)].push_back(Waiter {
            max: max.max(1),
            visibility_ms,
            deadline: Instant::now() + wait,
            reply: Some(reply),
            got: Vec::new(),
        });
    }

    /// A new receipt token.
    pub fn token(&mut self) -> i64 {
        self.tokens = self.tokens.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.tokens;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).cast_signed()
    }

    /// The lease a message sent to queue `q` now gets, if a waiter takes it: only while no
    /// older message is visible there, so that handing off never jumps the queue.
    pub fn lease_for(&mut self, q: usize, now: i64) -> Option<Lease> {
        if self.maybe_visible[q] {
            return None;
        }
        let (waiter, visibility_ms) = self.queues[q]
            .iter()
            .enumerate()
            .find(|(_, w)| w.room() > 0)
            .map(|(i, w)| (i, w.visibility_ms))?;
        self.hidden_until(q, now.saturating_add(visibility_ms));
        Some(Lease {
            waiter,
            visibility_ms,
            token: self.token(),
        })
    }

    /// The message leased by `lease` was inserted.
    pub fn give(&mut self, q: usize, lease: Lease, delivery: Delivery) {
        if let Some(w) = self.queues[q].get_mut(lease.waiter) {
            w.got.push(delivery);
        }
    }

    /// A message of queue `q` became visible.
    pub fn became_visible(&mut self, q: usize) {
        self.maybe_visible[q] = true;
    }

    /// A message of queue `q` is hidden until `at`.
    pub fn hidden_until(&mut self, q: usize, at: i64) {
        self.next_visible[q] = Some(self.next_visible[q].map_or(at, |n| n.min(at)));
    }

    /// A lease statement left no visible message in queue `q`; `next` is when its next
    /// hidden one shows.
    pub fn looked_empty(&mut self, q: usize, next: Option<i64>) {
        self.maybe_visible[q] = false;
        self.next_visible[q] = next;
    }

    /// Another process committed: any queue may hold messages it sent.
    pub fn all_maybe_visible(&mut self) {
        self.maybe_visible = [true; QUEUES];
    }

    fn due(&self, q: usize, now: i64) -> bool {
        self.maybe_visible[q] || self.next_visible[q].is_some_and(|at| at <= now)
    }

    /// Queue `q` has a waiter with room, and may hold visible messages.
    pub fn should_look(&self, q: usize, now: i64) -> bool {
        self.due(q, now) && self.queues[q].iter().any(|w| w.room() > 0)
    }

    /// Some queue should be looked at now.
    pub fn wants_look(&self, now: i64) -> bool {
        (0..QUEUES).any(|q| self.should_look(q, now))
    }

    /// The waiters of queue `q` with room, in order: (index, room, visibility).
    pub fn rooms(&self, q: usize) -> Vec<(usize, usize, i64)> {
        self.queues[q]
            .iter()
            .enumerate()
            .filter(|(_, w)| w.room() > 0)
            .map(|(i, w)| (i, w.room(), w.visibility_ms))
            .collect()
    }

    /// Leased to waiter `i` of queue `q` by a lease statement.
    pub fn give_all(&mut self, q: usize, i: usize, deliveries: Vec<Delivery>) {
        if let Some(w) = self.queues[q].get_mut(i) {
            w.got.extend(deliveries);
        }
    }

    /// When the writer must act without being asked: the first waiter's deadline, or when a
    /// queue with a waiter gets a message visible by the clock. `now` is the clock's.
    pub fn next_wake(&self, now: i64, instant: Instant) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut earliest = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        for (q, waiters) in self.queues.iter().enumerate() {
            for w in waiters {
                earliest(w.deadline);
            }
            if let Some(nv) = self.next_visible[q].filter(|_| !waiters.is_empty()) {
                let ms = nv.saturating_sub(now).max(0).cast_unsigned();
                earliest(instant + Duration::from_millis(ms));
            }
        }
        at
    }

    /// After a commit: answers every waiter that was given messages. Returns the leases of
    /// those whose caller stopped waiting in the meantime, to be made visible again.
    pub fn answer(&mut self) -> Vec<(QueueName, ReceiptKey)> {
        let mut orphaned = Vec::new();
        for (q, waiters) in self.queues.iter_mut().enumerate() {
            waiters.retain_mut(|w| {
                if w.got.is_empty() {
                    return true;
                }
                let got = std::mem::take(&mut w.got);
                if let Err(lost) = w.answer(got) {
                    let queue = codec::queue_of_index(q);
                    orphaned.extend(
                        lost.iter()
                            .filter_map(|d| ReceiptKey::parse(&d.receipt).ok())
                            .map(|r| (queue, r)),
                    );
                }
                false
            });
        }
        orphaned
    }

    /// The transaction rolled back: what it leased is gone, and what it learnt may be wrong.
    pub fn rolled_back(&mut self) {
        for waiters in &mut self.queues {
            for w in waiters {
                w.got.clear();
            }
        }
        self.maybe_visible = [true; QUEUES];
    }

    /// Answers, empty, the waiters whose wait is over, and drops those nobody waits for.
    pub fn expire(&mut self, now: Instant) {
        for waiters in &mut self.queues {
            waiters.retain_mut(|w| {
                if w.gone() {
                    return false;
                }
                if w.deadline > now || !w.got.is_empty() {
                    return true;
                }
                // A caller that stopped waiting meanwhile does not hear it.
                let _ = w.answer(Vec::new());
                false
            });
        }
    }

    /// The writer stops: every waiter is answered, empty.
    pub fn close(&mut self) {
        for waiters in &mut self.queues {
            for mut w in waiters.drain(..) {
                let _ = w.answer(Vec::new());
            }
        }
    }
}

//! Erasing the guest's personal data (retention, or the member's request). The booking's
//! money facts (member, venue, credits, receipt, reservation) and the history stay; only the
//! contact goes, replaced by when and why. A running saga still needs the guest to book, so
//! its erasure waits for the transition that finishes it.

use como_schemas::{Erasure, ErasureReason, Guest};

use super::{Machine, Record};
use crate::decision::HistoryKind;
use crate::state::Phase;

impl Machine<'_> {
    pub(super) fn on_erase(&mut self, reason: ErasureReason) {
        if !self.s.request.guest.is_personal() {
            return;
        }
        if matches!(self.s.phase, Phase::Done { .. }) {
            self.erase(reason);
        } else if self.s.erase_when_done.is_none() {
            self.s.erase_when_done = Some(reason);
            self.record(Record::new(HistoryKind::ErasureRequested).detail(format!(
                "{}: erased when the saga finishes",
                reason.as_str()
            )));
        }
    }

    /// Carry out an erasure that waited for the saga to finish, once it has.
    pub(super) fn erase_if_done(&mut self) {
        if let (Some(reason), Phase::Done { .. }) = (self.s.erase_when_done, &self.s.phase) {
            self.erase(reason);
        }
    }

    fn erase(&mut self, reason: ErasureReason) {
        self.s.erase_when_done = None;
        if !self.s.request.guest.is_personal() {
            return;
        }
        self.s.request.guest = Guest::Erased {
            erased: Erasure {
                at: self.now,
                reason,
            },
        };
        self.record(Record::new(HistoryKind::PersonalDataErased).detail(reason.as_str()));
    }
}

//! Step 3, redeem credits under the saga's `ReceiptNo`. Reconcile: replay the very same redeem,
//! which Memberson answers with the first redemption if there was one. Compensation: void the
//! redemption; a receipt never redeemed, or already voided, is nothing to undo.

use como_schemas::{
    Credits, MemberNo, ReceiptNo, ReplyOutcome, StepOutput, Timestamp, TransactionId,
};

use super::{compensated, reply, succeeded, undone};
use crate::clients::Deadline;
use crate::clients::memberson::{
    MembersonClient, RedeemRequest, Redemption, VoidOutcome, VoidRequest,
};

/// The redeem body, built only from the command so that every replay is identical.
pub fn request(
    client: &MembersonClient,
    member: &MemberNo,
    credits: Credits,
    receipt: &ReceiptNo,
    at: Timestamp,
) -> RedeemRequest {
    RedeemRequest {
        member_no: member.to_string(),
        point_type: client.point_type().to_owned(),
        amount: i64::try_from(credits.get()).unwrap_or(i64::MAX),
        transaction_date: at.to_datetime(),
        location: "como-saga".to_owned(),
        redemption_code: "EXPERIENCE".to_owned(),
        description: client.redeem_description().to_owned(),
        receipt_no: receipt.to_string(),
    }
}

fn redeemed(r: Redemption) -> ReplyOutcome {
    let transaction_id = match TransactionId::parse(r.transaction_id) {
        Ok(t) => t,
        Err(e) => return super::unreadable("transaction id", e),
    };
    let receipt_no = match ReceiptNo::parse(r.receipt_no) {
        Ok(t) => t,
        Err(e) => return super::unreadable("receipt number", e),
    };
    succeeded(StepOutput::CreditsRedeemed {
        transaction_id,
        receipt_no,
        balance: (!r.receipt_already_used)
            .then(|| u64::try_from(r.balance).ok())
            .flatten()
            .and_then(|b| Credits::new(b).ok()),
    })
}

pub async fn redeem(
    client: &MembersonClient,
    request: &RedeemRequest,
    deadline: Deadline,
) -> ReplyOutcome {
    reply(client.redeem(request, deadline).await, redeemed)
}

pub async fn replay(
    client: &MembersonClient,
    request: &RedeemRequest,
    deadline: Deadline,
) -> ReplyOutcome {
    reply(client.reconcile_redeem(request, deadline).await, redeemed)
}

pub async fn void(
    client: &MembersonClient,
    member: &MemberNo,
    receipt: &ReceiptNo,
    saga: &str,
    deadline: Deadline,
) -> ReplyOutcome {
    let request = VoidRequest {
        member_no: member.to_string(),
        receipt_no: receipt.to_string(),
        reason: format!("booking {saga} did not go through"),
    };
    reply(client.void(&request, deadline).await, |v| match v {
        VoidOutcome::Voided { .. } => undone("redemption voided"),
        VoidOutcome::AlreadyVoided => compensated("the redemption was already voided"),
        VoidOutcome::NeverRedeemed => compensated("nothing was redeemed under this receipt"),
    })
}

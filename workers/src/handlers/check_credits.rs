//! Step 1, check credits: the member is ACTIVE and holds at least the price. A read: nothing
//! to undo, and retrying is the reconciliation.

use como_schemas::{Credits, MemberNo, ReplyOutcome, StepOutput};

use super::{reply, succeeded};
use crate::clients::memberson::{MemberStatus, MembersonClient};
use crate::clients::{Deadline, codes};

pub async fn check(
    client: &MembersonClient,
    member: &MemberNo,
    price: Credits,
    deadline: Deadline,
) -> ReplyOutcome {
    let outcome = client.member_summary(member.as_str(), deadline).await;
    reply(outcome, |summary| {
        let refuse = |code: &str, message: String| ReplyOutcome::BusinessFailure {
            code: code.to_owned(),
            message,
        };
        match summary.status {
            MemberStatus::Active => {}
            MemberStatus::Expired => {
                return refuse(codes::MEMBER_EXPIRED, "the membership has expired".into());
            }
            MemberStatus::Terminated => {
                return refuse(
                    codes::MEMBER_TERMINATED,
                    "the membership was terminated".into(),
                );
            }
            MemberStatus::Other => {
                return refuse("MEMBER_INACTIVE", "the membership is not active".into());
            }
        }
        let balance = u64::try_from(summary.balance).unwrap_or(0);
        if balance < price.get() {
            return refuse(
                codes::INSUFFICIENT_POINTS,
                format!("the balance of {balance} credits is below the price of {price}"),
            );
        }
        match Credits::new(balance) {
            Ok(balance) => succeeded(StepOutput::CreditsChecked { balance }),
            Err(e) => super::unreadable("balance", e),
        }
    })
}

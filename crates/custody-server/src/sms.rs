//! Text messages through a Twilio-compatible HTTP API (`[sms]`): a form `POST` of `To`, `From`
//! and `Body` to `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`, as the account
//! with its auth token (HTTP basic). The base URL is the operator's, so a provider with the same
//! API (or a gateway on the site's network the operator allows) works too; it goes through the
//! egress guard like any other address.

use zeroize::Zeroizing;

use crate::egress::Egress;

/// The longest text sent: two SMS segments' worth, so a link is never cut.
const MAX_CHARS: usize = 300;

/// Where and as whom text messages are sent.
#[derive(Clone)]
pub struct SmsSender {
    /// The API's base URL (`https://api.twilio.com`).
    pub base_url: String,
    /// The account.
    pub account_sid: String,
    /// The account's auth token.
    pub auth_token: Zeroizing<String>,
    /// The sender's number (E.164) or name.
    pub from: String,
}

impl std::fmt::Debug for SmsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsSender")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

impl SmsSender {
    /// The messages endpoint of the account.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url.trim_end_matches('/'),
            self.account_sid
        )
    }

    /// Sends `text` to `to` (E.164) through `egress`.
    pub async fn send(&self, egress: &Egress, to: &str, text: &str) -> Result<(), String> {
        let text: String = text.chars().take(MAX_CHARS).collect();
        let form = [("To", to), ("From", self.from.as_str()), ("Body", text.as_str())];
        egress.post_form(&self.messages_url(), (&self.account_sid, &self.auth_token), &form).await
    }
}

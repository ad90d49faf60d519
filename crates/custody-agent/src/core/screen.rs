//! What the kiosk shows, and the questions it asks the server for a person at the keypad.

use super::{Action, AgentCore};
use custody_proto::device::{AgentMessage, FreeCompartments, KioskParcel, PickupAnswer};

/// What the kiosk screen should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// Waiting for the server's answer.
    Checking,
    /// This compartment is opening.
    Open(u16),
    /// One message for every kind of failure.
    NotAccepted,
    /// The link to the server is down; codes cannot be checked.
    Offline,
    /// Too many wrong codes at this bank: typed codes are paused until its budget renews; a
    /// QR code or the app still opens.
    CodesPaused,
    /// A courier's work here: parcels to deposit and to take back, and the free compartments
    /// by size (to choose a larger one for a parcel that does not fit).
    CourierWork {
        /// To deposit.
        deposits: Vec<KioskParcel>,
        /// To take back.
        returns: Vec<KioskParcel>,
        /// Free compartments by size.
        free: Vec<FreeCompartments>,
    },
    /// A courier's deposit is recorded.
    Thanks,
    /// The server no longer knows this device: nothing is checked here, online or offline.
    OutOfService,
}

impl Screen {
    /// What the kiosk says, in one sentence (a courier's work list is shown as a list, and
    /// this is its heading).
    pub fn message(&self) -> String {
        match self {
            Self::Checking => "Checking…".into(),
            Self::Open(n) => {
                format!("Compartment {n} is open. Please close the door when you are done.")
            }
            Self::NotAccepted => "Code not accepted.".into(),
            Self::Offline => {
                "The locker cannot check codes right now. Please try again later.".into()
            }
            Self::CodesPaused => "Too many wrong codes here: typed codes are paused for a while. \
                                  Scan the QR code from your message, or open from the app."
                .into(),
            Self::CourierWork { .. } => "Your work at this locker.".into(),
            Self::Thanks => "Thank you: the deposit is recorded.".into(),
            Self::OutOfService => {
                "This locker is out of service. Please ask the building's staff.".into()
            }
        }
    }
}

impl AgentCore {
    /// Sends the kiosk's question under a new request id, or says the kiosk is offline.
    pub(super) fn ask(&mut self, message: impl FnOnce(u64) -> AgentMessage) -> Vec<Action> {
        if !self.ready() {
            return vec![Action::Show(Screen::Offline)];
        }
        let request_id = self.next_request;
        self.next_request += 1;
        self.waiting.insert(request_id);
        vec![Action::Show(Screen::Checking), Action::Send(message(request_id))]
    }

    /// Refuses at once and still reports the attempt, under a request id nobody waits for, so
    /// the server audits it and counts it against the kiosk's budget; offline, only refuses.
    pub(super) fn refuse_and_report(
        &mut self,
        message: impl FnOnce(u64) -> AgentMessage,
    ) -> Vec<Action> {
        if !self.ready() {
            return vec![Action::Show(Screen::NotAccepted)];
        }
        let request_id = self.next_request;
        self.next_request += 1;
        vec![Action::Show(Screen::NotAccepted), Action::Send(message(request_id))]
    }

    /// The server's answer to a pickup the kiosk asked about.
    pub(super) fn answered(&mut self, request_id: u64, answer: &PickupAnswer) -> Vec<Action> {
        let scanned = self.scanning.remove(&request_id);
        if !self.waiting.remove(&request_id) {
            return Vec::new();
        }
        match answer {
            PickupAnswer::Accepted { compartment } => {
                if let Some((code, expires)) = scanned {
                    self.used_tokens.insert(code, expires);
                }
                vec![Action::Show(Screen::Open(*compartment))]
            }
            PickupAnswer::Refused => vec![Action::Show(Screen::NotAccepted)],
            PickupAnswer::Paused => vec![Action::Show(Screen::CodesPaused)],
        }
    }
}

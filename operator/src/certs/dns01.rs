//! DNS-01 through RFC 2136 dynamic updates signed with TSIG: the TXT record
//! `_acme-challenge.<name>` is added in the zone the name server is primary for, and deleted
//! (that value only) when the issuance ends.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm as HAlg;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::update_message;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record, RecordSet, RecordType};
use instant_acme::ChallengeType;

use crate::acme::{Challenger, Presentation};
use crate::api::tls::TsigAlgorithm;

const TTL: u32 = 60;
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Rfc2136 {
    server: String,
    signer: TSigner,
    presented: Mutex<Vec<(Name, Name, String)>>,
}

impl Rfc2136 {
    /// `secret` is the TSIG key (raw bytes, already base64-decoded).
    pub fn new(
        server: &str,
        key_name: &str,
        algorithm: TsigAlgorithm,
        secret: Vec<u8>,
    ) -> Result<Self, String> {
        let alg = match algorithm {
            TsigAlgorithm::HmacSha256 => HAlg::HmacSha256,
            TsigAlgorithm::HmacSha384 => HAlg::HmacSha384,
            TsigAlgorithm::HmacSha512 => HAlg::HmacSha512,
        };
        let name = Name::from_str(key_name).map_err(|e| format!("tsigKeyName {key_name:?}: {e}"))?;
        let signer = TSigner::new(secret, alg, name, 300).map_err(|e| format!("TSIG key: {e}"))?;
        Ok(Self { server: server.to_owned(), signer, presented: Mutex::new(Vec::new()) })
    }

    async fn exchange(&self, msg: &Message) -> Result<Message, String> {
        let addr: SocketAddr = tokio::net::lookup_host(&self.server)
            .await
            .map_err(|e| format!("name server {}: {e}", self.server))?
            .next()
            .ok_or_else(|| format!("name server {} has no address", self.server))?;
        let bytes = msg.to_vec().map_err(|e| e.to_string())?;
        let bind: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = tokio::net::UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        for _ in 0..3 {
            sock.send_to(&bytes, addr).await.map_err(|e| format!("name server {addr}: {e}"))?;
            match tokio::time::timeout(TIMEOUT, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == addr => {
                    let reply =
                        Message::from_vec(&buf[..n]).map_err(|e| format!("reply from {addr}: {e}"))?;
                    if reply.id() == msg.id() {
                        return Ok(reply);
                    }
                }
                Ok(Err(e)) => return Err(format!("name server {addr}: {e}")),
                _ => {}
            }
        }
        Err(format!("name server {addr} did not answer"))
    }

    /// The zone holding `name`: the closest enclosing name the server has an SOA for.
    async fn zone_of(&self, name: &Name) -> Result<Name, String> {
        let mut candidate = name.clone();
        loop {
            let mut q = Message::new();
            q.set_id(rand_id()).set_message_type(MessageType::Query).set_op_code(OpCode::Query);
            q.add_query(Query::query(candidate.clone(), RecordType::SOA));
            let reply = self.exchange(&q).await?;
            let soa = reply
                .answers()
                .iter()
                .chain(reply.name_servers())
                .find(|r| r.record_type() == RecordType::SOA);
            if let Some(r) = soa {
                return Ok(r.name().clone());
            }
            if candidate.is_root() {
                return Err(format!("name server {} is not authoritative for {name}", self.server));
            }
            candidate = candidate.base_name();
        }
    }

    async fn update(&self, mut msg: Message, what: &str) -> Result<(), String> {
        msg.set_id(rand_id());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or_default();
        let verifier = msg.finalize(&self.signer, now).map_err(|e| format!("signing the update: {e}"))?;
        let reply = self.exchange(&msg).await?;
        if reply.response_code() != ResponseCode::NoError {
            return Err(format!("name server {} refused to {what}: {}", self.server, reply.response_code()));
        }
        if let Some(mut verify) = verifier {
            verify(&reply.to_vec().map_err(|e| e.to_string())?)
                .map_err(|e| format!("the reply's TSIG: {e}"))?;
        }
        Ok(())
    }
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    u16::from_be_bytes(b)
}

fn txt_set(name: &Name, value: &str) -> RecordSet {
    let mut set = RecordSet::with_ttl(name.clone(), RecordType::TXT, TTL);
    set.insert(Record::from_rdata(name.clone(), TTL, RData::TXT(TXT::new(vec![value.to_owned()]))), 0);
    set
}

impl Challenger for Rfc2136 {
    fn kind(&self) -> ChallengeType {
        ChallengeType::Dns01
    }

    fn covers(&self, _name: &str, _wildcard: bool) -> bool {
        true
    }

    fn present<'a>(&'a self, p: &'a Presentation) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let record =
                Name::from_str(&format!("_acme-challenge.{}.", p.name)).map_err(|e| e.to_string())?;
            let zone = self.zone_of(&record).await?;
            let msg = update_message::append(txt_set(&record, &p.value), zone.clone(), false, false);
            self.update(msg, &format!("add TXT {record}")).await?;
            self.presented.lock().expect("presented").push((zone, record, p.value.clone()));
            Ok(())
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let done: Vec<_> = self.presented.lock().expect("presented").drain(..).collect();
            for (zone, record, value) in done {
                let msg = update_message::delete_by_rdata(txt_set(&record, &value), zone, false);
                if let Err(e) = self.update(msg, &format!("delete TXT {record}")).await {
                    tracing::warn!(error = %e, record = %record, "could not delete a DNS-01 record");
                }
            }
        })
    }
}

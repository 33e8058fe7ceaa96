//! ListContainers from encoded entries.
//!
//! The kubelet lists every container of the node each second (the PLEG relist). With a
//! thousand containers, building and encoding a thousand `Container` messages each time is
//! nearly all of the RPC's cost, and nearly all of it repeats the last call. So each entry
//! is encoded once per state of its container and kept; the whole unfiltered reply is kept
//! while no container changed (see [`Pods::read_containers`]).
//!
//! tonic's generated service can only send messages it encodes itself, so this one RPC is
//! routed here, ahead of it, by [`WithContainerList`]: same path, same bytes on the wire.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use crius_proto::cri;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::reply;
use crate::container::record::{ContainerRecord, ContainerState};
use crate::pods::{lock, Pods};

/// The RPC this module serves.
pub const PATH: &str = "/runtime.v1.RuntimeService/ListContainers";

/// Whether `filter` selects `c` (CRI semantics: ids match by prefix, as containerd does;
/// every selector label must be present with the same value).
pub fn selects(filter: &cri::ContainerFilter, c: &ContainerRecord) -> bool {
    c.id.starts_with(&filter.id)
        && c.sandbox_id.starts_with(&filter.pod_sandbox_id)
        && filter
            .state
            .as_ref()
            .is_none_or(|st| reply::container_state_code(c.state) == st.state)
        && super::runtime::labels_match(&c.config.labels, &filter.label_selector)
}

/// Encoded replies, and what they were built from.
#[derive(Debug, Default)]
struct Cache {
    /// The unfiltered reply and the containers generation it was built at.
    whole: Option<(u64, Bytes)>,
    /// One encoded `Container` per id.
    entries: HashMap<String, Entry>,
    /// Counts unfiltered lists: an entry not seen by the latest one is gone.
    epoch: u64,
}

#[derive(Debug)]
struct Entry {
    /// The only field of a list entry that changes after CreateContainer.
    state: ContainerState,
    encoded: Bytes,
    epoch: u64,
}

impl Cache {
    /// The encoded `ListContainersResponse` of `selected` (the containers at `generation`
    /// that the filter selects; `unfiltered` when that is all of them).
    fn reply<'a>(
        &mut self,
        generation: u64,
        unfiltered: bool,
        selected: impl Iterator<Item = &'a ContainerRecord>,
    ) -> Bytes {
        if unfiltered {
            if let Some((g, whole)) = &self.whole {
                if *g == generation {
                    return whole.clone();
                }
            }
            self.epoch += 1;
        }
        let epoch = self.epoch;
        let mut parts = Vec::new();
        for c in selected {
            match self.entries.get_mut(&c.id) {
                Some(e) if e.state == c.state => {
                    if unfiltered {
                        e.epoch = epoch;
                    }
                    parts.push(e.encoded.clone());
                }
                _ => {
                    let encoded = Bytes::from(reply::container(c).encode_to_vec());
                    parts.push(encoded.clone());
                    let entry = Entry {
                        state: c.state,
                        encoded,
                        epoch,
                    };
                    self.entries.insert(c.id.clone(), entry);
                }
            }
        }
        let reply = concat(&parts);
        if unfiltered {
            self.entries.retain(|_, e| e.epoch == epoch);
            self.whole = Some((generation, reply.clone()));
        }
        reply
    }
}

/// `ListContainersResponse { containers: parts }` on the wire: field 1, length-delimited,
/// once per part.
fn concat(parts: &[Bytes]) -> Bytes {
    let key = prost::encoding::key_len(1);
    let len: usize = parts
        .iter()
        .map(|p| key + prost::encoding::encoded_len_varint(p.len() as u64) + p.len())
        .sum();
    let mut buf = BytesMut::with_capacity(len);
    for p in parts {
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut buf);
        prost::encoding::encode_varint(p.len() as u64, &mut buf);
        buf.put_slice(p);
    }
    buf.freeze()
}

/// ListContainers over the node's containers.
#[derive(Debug)]
pub struct ContainerList {
    pods: Arc<Pods>,
    cache: Mutex<Cache>,
}

impl ContainerList {
    pub fn new(pods: Arc<Pods>) -> Self {
        ContainerList {
            pods,
            cache: Mutex::default(),
        }
    }

    /// The encoded reply to a ListContainers with `filter`.
    pub fn reply(&self, filter: Option<cri::ContainerFilter>) -> Bytes {
        let filter = filter.unwrap_or_default();
        let unfiltered = filter == cri::ContainerFilter::default();
        // Lock order: the cache, then the records (nothing takes them the other way).
        let mut cache = lock(&self.cache);
        self.pods.read_containers(|generation, all| {
            cache.reply(generation, unfiltered, all.filter(|c| selects(&filter, c)))
        })
    }
}

/// Routes ListContainers to a [`ContainerList`] and every other RPC to `inner` (the
/// generated RuntimeService server).
#[derive(Debug, Clone)]
pub struct WithContainerList<S> {
    inner: S,
    list: Arc<ContainerList>,
}

impl<S> WithContainerList<S> {
    pub fn new(inner: S, list: Arc<ContainerList>) -> Self {
        WithContainerList { inner, list }
    }
}

impl<S: NamedService> NamedService for WithContainerList<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<tonic::body::Body>> for WithContainerList<S>
where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != PATH {
            return Box::pin(self.inner.call(req));
        }
        let svc = ListSvc(self.list.clone());
        Box::pin(async move { Ok(tonic::server::Grpc::new(EncodedCodec).unary(svc, req).await) })
    }
}

struct ListSvc(Arc<ContainerList>);

impl UnaryService<cri::ListContainersRequest> for ListSvc {
    type Response = Bytes;
    type Future = std::future::Ready<Result<Response<Bytes>, Status>>;

    fn call(&mut self, req: Request<cri::ListContainersRequest>) -> Self::Future {
        std::future::ready(Ok(Response::new(self.0.reply(req.into_inner().filter))))
    }
}

/// Decodes the request with prost; sends a reply that is already encoded.
struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = cri::ListContainersRequest;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedCodec
    }
}

impl Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for EncodedCodec {
    type Item = cri::ListContainersRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        cri::ListContainersRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("ListContainersRequest: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::config::ContainerConfig;

    fn rec(id: &str, pod: &str, state: ContainerState) -> ContainerRecord {
        let mut config = ContainerConfig::default();
        config.metadata.name = format!("name-{id}");
        config.labels.insert("app".into(), pod.into());
        ContainerRecord {
            id: id.into(),
            sandbox_id: pod.into(),
            name: format!("{id}_{pod}"),
            config,
            image_id: "sha256:aa".into(),
            image_name: "busybox".into(),
            image_ref: "sha256:aa".into(),
            state,
            created_at: 7,
            started_at: 0,
            exit: None,
            oom_killed: false,
            pid: 0,
            log_path: String::new(),
            spec: None,
            stop_signal: None,
        }
    }

    fn decode(b: &Bytes) -> Vec<cri::Container> {
        cri::ListContainersResponse::decode(b.clone())
            .expect("a valid ListContainersResponse")
            .containers
    }

    #[test]
    fn encoded_reply_is_what_prost_would_send() {
        let recs = [
            rec("a1", "p1", ContainerState::Created),
            rec("b2", "p2", ContainerState::Running),
        ];
        let mut cache = Cache::default();
        let got = cache.reply(1, true, recs.iter());
        let want = cri::ListContainersResponse {
            containers: recs.iter().map(reply::container).collect(),
        };
        assert_eq!(got, Bytes::from(want.encode_to_vec()));
        // Same generation: the kept reply, whatever the iterator says.
        assert_eq!(cache.reply(1, true, std::iter::empty()), got);
    }

    #[test]
    fn a_changed_state_or_generation_is_never_served_stale() {
        let mut recs = vec![rec("a1", "p1", ContainerState::Created)];
        let mut cache = Cache::default();
        let first = decode(&cache.reply(1, true, recs.iter()));
        assert_eq!(first[0].state, cri::ContainerState::ContainerCreated as i32);
        recs[0].state = ContainerState::Running;
        let second = decode(&cache.reply(2, true, recs.iter()));
        assert_eq!(
            second[0].state,
            cri::ContainerState::ContainerRunning as i32
        );
        recs.push(rec("b2", "p1", ContainerState::Exited));
        assert_eq!(decode(&cache.reply(3, true, recs.iter())).len(), 2);
    }

    #[test]
    fn removed_containers_leave_the_cache_at_the_next_full_list() {
        let recs = [
            rec("a1", "p1", ContainerState::Running),
            rec("b2", "p2", ContainerState::Running),
        ];
        let mut cache = Cache::default();
        cache.reply(1, true, recs.iter());
        assert_eq!(cache.entries.len(), 2);
        // A filtered list does not prune: it saw only part of the set.
        let one = cache.reply(2, false, recs[..1].iter());
        assert_eq!(decode(&one).len(), 1);
        assert_eq!(cache.entries.len(), 2);
        let after = cache.reply(2, true, recs[..1].iter());
        assert_eq!(decode(&after)[0].id, "a1");
        assert_eq!(cache.entries.len(), 1);
    }

    #[test]
    fn filters_select_by_prefix_state_and_labels() {
        let c = rec("abc", "pod1", ContainerState::Running);
        let mut f = cri::ContainerFilter::default();
        assert!(selects(&f, &c));
        f.id = "ab".into();
        assert!(selects(&f, &c));
        f.pod_sandbox_id = "pod2".into();
        assert!(!selects(&f, &c));
        f.pod_sandbox_id = "pod".into();
        f.state = Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerExited as i32,
        });
        assert!(!selects(&f, &c));
        f.state = None;
        f.label_selector.insert("app".into(), "pod1".into());
        assert!(selects(&f, &c));
        f.label_selector.insert("tier".into(), "x".into());
        assert!(!selects(&f, &c));
    }
}

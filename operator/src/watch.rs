//! Watches over every namespace, or over a list of them as one stream.
//!
//! Cluster-wide, a kind is one watch (`Api::all`). With
//! `--watch-namespaces` the operator may list only in the listed namespaces
//! (a Role in each), so each kind is one watch per namespace, and
//! [`merge`] joins them into the single event stream that one reflector
//! cache and the controller expect: one initial list holding every
//! namespace's objects, then their changes. A namespace whose watch
//! restarts (a new initial list) re-sends the whole set, so the cache never
//! loses another namespace's objects.

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Which namespaces the operator watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace (a ClusterRole).
    #[default]
    All,
    /// Only these (a Role in each).
    Listed(Vec<String>),
}

impl Namespaces {
    /// From `--watch-namespaces`: `None` is every namespace.
    pub fn from_list(list: Option<Vec<String>>) -> Self {
        match list {
            None => Namespaces::All,
            Some(list) => Namespaces::Listed(list),
        }
    }

    /// One API handle per watched scope: `Api::all`, or one per namespace.
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Namespaces::All => vec![Api::all(client.clone())],
            Namespaces::Listed(namespaces) => namespaces
                .iter()
                .map(|namespace| Api::namespaced(client.clone(), namespace))
                .collect(),
        }
    }
}

/// A namespaced kind the operator can watch and cache.
pub trait Watched:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType: Default>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType: Default>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// The events of `K` in every watched namespace as one stream (see the
/// module docs), each object passed through `modify` first.
pub fn watch<K>(
    client: &Client,
    namespaces: &Namespaces,
    config: &watcher::Config,
    modify: fn(&mut K),
) -> BoxStream<'static, Result<Event<K>, watcher::Error>>
where
    K: Watched,
{
    let streams: Vec<_> = namespaces
        .apis::<K>(client)
        .into_iter()
        .map(|api| {
            watcher(api, config.clone())
                .map(move |event| event.map(|event| event.modify(modify)))
                .boxed()
        })
        .collect();
    merge(streams)
}

fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    watcher::watcher(api, config)
}

/// Joins the watches of several namespaces into one (see the module docs);
/// one stream is passed through unchanged.
pub fn merge<K>(
    mut streams: Vec<BoxStream<'static, Result<Event<K>, watcher::Error>>>,
) -> BoxStream<'static, Result<Event<K>, watcher::Error>>
where
    K: Resource + Clone + Send + 'static,
{
    if streams.len() == 1 {
        return streams.remove(0);
    }
    let mut merger = Merger::new(streams.len());
    let tagged = stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(index, stream)| stream.map(move |event| (index, event)).boxed()),
    );
    tagged
        .map(move |(index, event)| stream::iter(merger.handle(index, event)))
        .flatten()
        .boxed()
}

type Objects<K> = BTreeMap<(String, String), K>;

/// The state of [`merge`]: what each namespace's watch holds.
struct Merger<K> {
    /// Each watch's objects after its last initial list; `None` before its
    /// first.
    listed: Vec<Option<Objects<K>>>,
    /// Each watch's initial list in progress.
    listing: Vec<Option<Objects<K>>>,
}

impl<K: Resource + Clone> Merger<K> {
    fn new(watches: usize) -> Self {
        Self {
            listed: (0..watches).map(|_| None).collect(),
            listing: (0..watches).map(|_| None).collect(),
        }
    }

    fn key(object: &K) -> (String, String) {
        (object.namespace().unwrap_or_default(), object.name_any())
    }

    fn all_listed(&self) -> bool {
        self.listed.iter().all(Option::is_some)
    }

    /// The merged events that one event of watch `index` yields.
    fn handle(
        &mut self,
        index: usize,
        event: Result<Event<K>, watcher::Error>,
    ) -> Vec<Result<Event<K>, watcher::Error>> {
        let event = match event {
            Ok(event) => event,
            Err(error) => return vec![Err(error)],
        };
        match event {
            Event::Init => {
                self.listing[index] = Some(Objects::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                if let Some(listing) = &mut self.listing[index] {
                    listing.insert(Self::key(&object), object);
                }
                Vec::new()
            }
            Event::InitDone => {
                self.listed[index] = Some(self.listing[index].take().unwrap_or_default());
                if !self.all_listed() {
                    return Vec::new();
                }
                let mut events = vec![Ok(Event::Init)];
                events.extend(
                    self.listed
                        .iter()
                        .flatten()
                        .flat_map(BTreeMap::values)
                        .cloned()
                        .map(|object| Ok(Event::InitApply(object))),
                );
                events.push(Ok(Event::InitDone));
                events
            }
            Event::Apply(object) => {
                if let Some(listed) = &mut self.listed[index] {
                    listed.insert(Self::key(&object), object.clone());
                }
                if self.all_listed() {
                    vec![Ok(Event::Apply(object))]
                } else {
                    Vec::new()
                }
            }
            Event::Delete(object) => {
                if let Some(listed) = &mut self.listed[index] {
                    listed.remove(&Self::key(&object));
                }
                if self.all_listed() {
                    vec![Ok(Event::Delete(object))]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;

    use super::*;

    fn config_map(namespace: &str, name: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.namespace = Some(namespace.into());
        object.metadata.name = Some(name.into());
        object
    }

    fn names(store: &reflector::Store<ConfigMap>) -> Vec<String> {
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|object| format!("{}/{}", object.namespace().unwrap(), object.name_any()))
            .collect();
        names.sort();
        names
    }

    /// Two namespaces' watches fill one cache: it is ready only when both
    /// have listed, holds both namespaces' objects, follows changes, and a
    /// restarted watch in one namespace keeps the other's objects.
    #[tokio::test]
    async fn namespaced_watches_fill_one_cache() {
        let (a_tx, a_rx) = futures::channel::mpsc::unbounded();
        let (b_tx, b_rx) = futures::channel::mpsc::unbounded();
        let merged = merge(vec![a_rx.boxed(), b_rx.boxed()]);
        let (store, writer) = reflector::store();
        let mut events = reflector::reflector(writer, merged).boxed();
        let send = |tx: &futures::channel::mpsc::UnboundedSender<_>, event| {
            tx.unbounded_send(Ok(event)).unwrap();
        };

        send(&a_tx, Event::Init);
        send(&a_tx, Event::InitApply(config_map("team-a", "one")));
        send(&a_tx, Event::InitDone);
        send(&b_tx, Event::Init);
        send(&b_tx, Event::InitApply(config_map("team-b", "two")));
        // Nothing reaches the cache until both have listed.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), events.next())
                .await
                .is_err()
        );
        send(&b_tx, Event::InitDone);
        for _ in 0..4 {
            events.next().await.unwrap().unwrap(); // Init, two InitApply, InitDone
        }
        store.wait_until_ready().await.unwrap();
        assert_eq!(names(&store), ["team-a/one", "team-b/two"]);

        send(&b_tx, Event::Apply(config_map("team-b", "three")));
        events.next().await.unwrap().unwrap();
        assert_eq!(names(&store), ["team-a/one", "team-b/three", "team-b/two"]);

        // team-a's watch restarts and finds "one" gone: team-b's stay.
        send(&a_tx, Event::Init);
        send(&a_tx, Event::InitDone);
        for _ in 0..4 {
            events.next().await.unwrap().unwrap(); // Init, two InitApply, InitDone
        }
        assert_eq!(names(&store), ["team-b/three", "team-b/two"]);

        send(&b_tx, Event::Delete(config_map("team-b", "two")));
        events.next().await.unwrap().unwrap();
        assert_eq!(names(&store), ["team-b/three"]);
    }

    /// With listed namespaces, Secrets are listed once per namespace
    /// (never cluster-wide) and as metadata only: the request asks for
    /// `PartialObjectMetadataList`, so no value crosses the wire; each
    /// request is one the RBAC table grants.
    #[tokio::test]
    async fn secrets_are_listed_per_namespace_as_metadata_only() {
        use http::{Request, Response};
        use k8s_openapi::api::core::v1::Secret;
        use kube::api::PartialObjectMeta;
        use kube::client::Body;

        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let namespaces = Namespaces::Listed(vec!["team-a".into(), "team-b".into()]);
        let mut events = watch::<PartialObjectMeta<Secret>>(
            &client,
            &namespaces,
            &watcher::Config::default(),
            |_| {},
        );
        let polling = tokio::spawn(async move { events.next().await.map(|event| event.is_ok()) });
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (request, send) =
                tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request())
                    .await
                    .expect("a list request")
                    .expect("the service is called");
            let accept = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let uri = request.uri().to_string();
            let access = crate::rbac::access(request.method(), &uri).unwrap();
            assert!(crate::rbac::permits(&access), "{uri}");
            seen.push((uri, accept));
            send.send_response(
                Response::builder()
                    .body(Body::from(
                        serde_json::to_vec(&serde_json::json!({
                            "apiVersion": "meta.k8s.io/v1",
                            "kind": "PartialObjectMetadataList",
                            "metadata": {"resourceVersion": "1"},
                            "items": [],
                        }))
                        .unwrap(),
                    ))
                    .unwrap(),
            );
        }
        seen.sort();
        for ((uri, accept), namespace) in seen.iter().zip(["team-a", "team-b"]) {
            assert!(
                uri.starts_with(&format!("/api/v1/namespaces/{namespace}/secrets?")),
                "{uri}"
            );
            assert!(accept.contains("as=PartialObjectMetadataList"), "{accept}");
        }
        polling.abort();
    }
}

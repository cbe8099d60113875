// pusher-js 8 clients and the official server SDKs (npm `pusher`, PyPI
// `pusher`) against two wsgate gateways that share a nats-server. Started by
// tests/tests/pusher.rs, which passes the gateways and the app in the
// environment; every case prints one line, and any failure exits non-zero.
//
//   GATEWAY_A / GATEWAY_B        public listeners, host:port
//   ADMIN_A / ADMIN_B            admin listeners (the HTTP API), host:port
//   PUSHER_APP_ID, PUSHER_KEY, PUSHER_SECRET

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import PusherClient from 'pusher-js';
import PusherServer from 'pusher';
import Echo from 'laravel-echo';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const split = (address) => {
  const [host, port] = address.split(':');
  return { host, port: Number(port) };
};
const A = split(env('GATEWAY_A'));
const B = split(env('GATEWAY_B'));
const ADMIN_A = split(env('ADMIN_A'));
const ADMIN_B = split(env('ADMIN_B'));
const APP_ID = env('PUSHER_APP_ID');
const KEY = env('PUSHER_KEY');
const SECRET = env('PUSHER_SECRET');
const HERE = path.dirname(fileURLToPath(import.meta.url));
const TIMEOUT_MS = 10_000;

const SMALL_APP_ID = env('SMALL_APP_ID');
const SMALL_KEY = env('SMALL_KEY');
// Encrypted channels: only the SDKs know this key; the gateway relays ciphertext.
const MASTER_KEY = randomBytes(32).toString('base64');

const server = (admin, secret = SECRET, appId = APP_ID, key = KEY) =>
  new PusherServer({
    appId,
    key,
    secret,
    host: admin.host,
    port: admin.port,
    useTLS: false,
    encryptionMasterKeyBase64: MASTER_KEY,
  });
const serverA = server(ADMIN_A);
const serverB = server(ADMIN_B);

/** The Python SDK, one command; its printed JSON. */
const python = (...args) => {
  const out = execFileSync('python3', [path.join(HERE, 'sdk.py'), ...args], {
    env: { ...process.env, PUSHER_HOST: ADMIN_B.host, PUSHER_PORT: String(ADMIN_B.port) },
    encoding: 'utf8',
  });
  return JSON.parse(out);
};

const clients = [];
/** A pusher-js client on `gateway`; private and presence channels are
 * authorized by the Node server SDK, with `user` as the presence member. */
const connect = (gateway, { key = KEY, user, authorize, signinAs } = {}) => {
  const signer = key === SMALL_KEY ? server(ADMIN_A, SECRET, SMALL_APP_ID, SMALL_KEY) : serverA;
  const client = new PusherClient(key, {
    cluster: 'unused',
    wsHost: gateway.host,
    wsPort: gateway.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    userAuthentication: {
      customHandler: ({ socketId }, callback) =>
        callback(null, signer.authenticateUser(socketId, { id: signinAs, name: `user ${signinAs}` })),
    },
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        if (authorize) return authorize({ socketId, channelName }, callback);
        const presence = channelName.startsWith('presence-')
          ? { user_id: user, user_info: { name: `name of ${user}` } }
          : undefined;
        callback(null, signer.authorizeChannel(socketId, channelName, presence));
      },
    },
  });
  clients.push(client);
  return client;
};

const within = (promise, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS)),
  ]);
const connected = (client) =>
  within(
    new Promise((resolve) => {
      if (client.connection.state === 'connected') return resolve();
      client.connection.bind('connected', resolve);
    }),
    'connection',
  );
const once = (channel, event) =>
  within(new Promise((resolve) => channel.bind(event, (data) => resolve(data))), `${channel.name} ${event}`);
const subscribed = async (client, name) => {
  const channel = client.subscribe(name);
  await once(channel, 'pusher:subscription_succeeded');
  return channel;
};
/** Everything `event` brings on `channel`, for checks that something did not arrive. */
const record = (channel, event) => {
  const seen = [];
  channel.bind(event, (data) => seen.push(data));
  return seen;
};
const assert = (condition, message) => {
  if (!condition) throw new Error(message);
};
const equal = (actual, expected, message) =>
  assert(
    JSON.stringify(actual) === JSON.stringify(expected),
    `${message}: ${JSON.stringify(actual)} != ${JSON.stringify(expected)}`,
  );

// A case that failed early may leave a waiting promise to time out later:
// that must not end the run before the other cases (the case already failed).
process.on('unhandledRejection', (error) => console.log(`(after a failed case) ${error}`));
// An exception thrown in a library's callback (say, pusher-js given a frame
// it cannot read) fails the run, named, instead of ending it silently.
let uncaught = 0;
process.on('uncaughtException', (error) => {
  uncaught += 1;
  console.log(`FAILED - uncaught exception: ${error.stack || error}`);
});

const cases = [];
const test = (name, body) => cases.push({ name, body });

test('connection_established gives a socket id of the form \\d+.\\d+', async () => {
  const client = connect(A);
  await connected(client);
  assert(/^\d+\.\d+$/.test(client.connection.socket_id), client.connection.socket_id);
});

test('public channel: an event triggered on one replica reaches subscribers on both, exactly once', async () => {
  const a = connect(A);
  const b = connect(B);
  const [onA, onB] = await Promise.all([subscribed(a, 'news'), subscribed(b, 'news')]);
  const [seenA, seenB] = [record(onA, 'headline'), record(onB, 'headline')];
  const markers = Promise.all([once(onA, 'marker'), once(onB, 'marker')]);
  await serverA.trigger('news', 'headline', { text: 'hello' });
  // The same gateway publishes both, so the marker comes after the event everywhere.
  await serverA.trigger('news', 'marker', 0);
  await markers;
  equal([seenA, seenB], [[{ text: 'hello' }], [{ text: 'hello' }]], 'once on both replicas');
});

test('every valid channel name works end to end', async () => {
  const name = 'Az09_-=@,.;'.repeat(14).slice(0, 164);
  const b = connect(B);
  const channel = await subscribed(b, name);
  const got = once(channel, 'e');
  await serverA.trigger(name, 'e', 'x');
  equal(await got, 'x', 'a 164-character name of every allowed character');
});

test('socket_id excludes one connection across replicas', async () => {
  const a = connect(A);
  const b = connect(B);
  const [onA, onB] = await Promise.all([subscribed(a, 'excl'), subscribed(b, 'excl')]);
  await connected(a);
  const seenByA = record(onA, 'skip');
  const marker = once(onA, 'marker');
  const got = once(onB, 'skip');
  await serverB.trigger('excl', 'skip', 1, { socket_id: a.connection.socket_id });
  equal(await got, 1, 'the other connection receives it');
  await serverB.trigger('excl', 'marker', 2);
  await marker;
  equal(seenByA, [], 'the excluded connection never did');
});

test('batch events arrive in order on the other replica', async () => {
  const b = connect(B);
  const channel = await subscribed(b, 'batch');
  const seen = [];
  const done = within(
    new Promise((resolve) =>
      channel.bind('n', (data) => {
        seen.push(data);
        if (seen.length === 10) resolve();
      }),
    ),
    'ten batch events',
  );
  await serverA.triggerBatch(Array.from({ length: 10 }, (_, i) => ({ channel: 'batch', name: 'n', data: i })));
  await done;
  equal(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'in order');
});

test('private channel: a valid signature subscribes, a wrong one gets subscription_error', async () => {
  const good = connect(A);
  await subscribed(good, 'private-ok');
  const bad = connect(B, {
    authorize: ({ socketId, channelName }, callback) =>
      callback(null, server(ADMIN_A, 'wrong-secret').authorizeChannel(socketId, channelName)),
  });
  const channel = bad.subscribe('private-ok');
  const error = await once(channel, 'pusher:subscription_error');
  equal(error.status, 401, 'status');
});

test('client events reach the other subscribers, not the sender, and not on public channels', async () => {
  const a = connect(A);
  const b = connect(B);
  const [onA, onB] = await Promise.all([subscribed(a, 'private-chat'), subscribed(b, 'private-chat')]);
  const echoed = record(onA, 'client-typing');
  const got = once(onB, 'client-typing');
  assert(onA.trigger('client-typing', { who: 'a' }), 'trigger accepted by pusher-js');
  equal(await got, { who: 'a' }, 'the other subscriber');
  const marker = once(onA, 'marker');
  await serverA.trigger('private-chat', 'marker', 0);
  await marker;
  equal(echoed, [], 'not echoed to the sender');

  const publicChannel = await subscribed(a, 'lobby');
  const refused = within(new Promise((resolve) => a.connection.bind('error', resolve)), 'pusher:error');
  publicChannel.trigger('client-x', {});
  const error = await refused;
  equal(error.data.code, 4301, 'refused on a public channel with 4301');
  equal(a.connection.state, 'connected', '4301 does not close');
});

test('presence: members across replicas, one member per user id, removed with its last connection', async () => {
  const alice1 = connect(A, { user: 'alice' });
  const bob = connect(B, { user: 'bob' });
  const aliceChannel = await subscribed(alice1, 'presence-room');
  const bobAdded = once(aliceChannel, 'pusher:member_added');
  const bobChannel = bob.subscribe('presence-room');
  const members = await once(bobChannel, 'pusher:subscription_succeeded');
  equal(members.count, 2, 'bob sees both members');
  equal(members.get('alice').info, { name: 'name of alice' }, 'with their info');
  equal((await bobAdded).id, 'bob', 'alice sees bob join');

  // alice again, on the other replica: still one member.
  const added = record(bobChannel, 'pusher:member_added');
  const removed = record(bobChannel, 'pusher:member_removed');
  const alice2 = connect(B, { user: 'alice' });
  const second = alice2.subscribe('presence-room');
  equal((await once(second, 'pusher:subscription_succeeded')).count, 2, 'still two members');
  equal(python('users', 'presence-room'), { users: [{ id: 'alice' }, { id: 'bob' }] }, 'users (Python SDK)');
  equal(python('info', 'presence-room'), { occupied: true, subscription_count: 3, user_count: 2 }, 'info');

  alice1.disconnect();
  const marker = once(bobChannel, 'marker');
  await serverA.trigger('presence-room', 'marker', 0);
  await marker;
  // The first connection's leave is handled once its socket closed; give it
  // the marker's round trip and check nothing announced alice's departure.
  const gone = once(bobChannel, 'pusher:member_removed');
  alice2.disconnect();
  equal((await gone).id, 'alice', 'removed with the last connection');
  equal(added, [], 'no second member_added for alice');
  equal(removed.length, 1, 'one member_removed');
});

test('channel info through both SDKs', async () => {
  const a = connect(A);
  const b = connect(B);
  await Promise.all([subscribed(a, 'info-x'), subscribed(b, 'info-x')]);
  const response = await serverA.get({ path: '/channels/info-x', params: { info: 'subscription_count' } });
  equal(await response.json(), { occupied: true, subscription_count: 2 }, 'Node SDK');
  equal(python('info', 'info-x'), { occupied: true, subscription_count: 2 }, 'Python SDK');
  const listed = python('channels', 'info-');
  assert('info-x' in listed.channels, JSON.stringify(listed));
  const empty = await serverB.get({ path: '/channels/nobody-here', params: { info: 'subscription_count' } });
  equal(await empty.json(), { occupied: false, subscription_count: 0 }, 'an empty channel');
});

test('Python SDK triggers reach pusher-js', async () => {
  const a = connect(A);
  const channel = await subscribed(a, 'from-python');
  const got = once(channel, 'py');
  python('trigger', 'from-python', 'py', '{"x":1}');
  equal(await got, { x: 1 }, 'data');
});

test('a bad signature gets 401 from both SDKs', async () => {
  let status;
  try {
    await server(ADMIN_A, 'wrong-secret').trigger('c', 'e', {});
  } catch (error) {
    status = error.status;
  }
  equal(status, 401, 'Node SDK');
  equal(python('bad-signature').status, 401, 'Python SDK');
});

test('an unknown app key gets 4001 and no reconnect', async () => {
  const client = connect(A, { key: 'no-such-key' });
  const error = await within(new Promise((resolve) => client.connection.bind('error', resolve)), '4001');
  equal(error.data?.code ?? error.error?.data?.code, 4001, 'code');
});

test('encrypted channels are relayed: pusher-js decrypts what the SDK encrypted; client events are refused', async () => {
  const b = connect(B);
  const channel = await subscribed(b, 'private-encrypted-vault');
  const got = once(channel, 'secret');
  await serverA.trigger('private-encrypted-vault', 'secret', { code: 42 });
  equal(await got, { code: 42 }, 'decrypted by the client');
  const refused = within(new Promise((resolve) => b.connection.bind('error', resolve)), 'pusher:error');
  b.send_event('client-x', { nonce: '', ciphertext: '' }, 'private-encrypted-vault');
  equal((await refused).data.code, 4301, 'client event refused');
});

test('client events over max_client_events_per_second are refused with 4301, the rest delivered', async () => {
  const a = connect(A);
  const b = connect(B);
  const [onA, onB] = await Promise.all([subscribed(a, 'private-burst'), subscribed(b, 'private-burst')]);
  const errors = [];
  a.connection.bind('error', (error) => errors.push(error.data.code));
  const received = record(onB, 'client-burst');
  for (let i = 0; i < 15; i += 1) onA.trigger('client-burst', i);
  await new Promise((resolve) => setTimeout(resolve, 1200));
  const last = once(onB, 'client-last');
  onA.trigger('client-last', 0);
  await last;
  assert(received.length >= 10 && received.length < 15, `received ${received.length} of 15`);
  assert(errors.length === 15 - received.length, `errors ${JSON.stringify(errors)}`);
  assert(errors.every((code) => code === 4301), JSON.stringify(errors));
});

test("an app's limits: 4004 over max_connections, subscription_error over max_presence_members", async () => {
  const first = connect(A, { key: SMALL_KEY, user: 'u1' });
  await connected(first);
  const second = connect(A, { key: SMALL_KEY });
  const error = await within(new Promise((resolve) => second.connection.bind('error', resolve)), '4004');
  equal(error.data?.code ?? error.error?.data?.code, 4004, 'over the quota');
  await subscribed(first, 'presence-small');
  const other = connect(B, { key: SMALL_KEY, user: 'u2' });
  const refused = await once(other.subscribe('presence-small'), 'pusher:subscription_error');
  equal(refused.status, 403, 'over max_presence_members');
});

test('events over limits.command_rate are dropped with 4301; the connection stays', async () => {
  const a = connect(A);
  await connected(a);
  const errors = [];
  a.connection.bind('error', (error) => errors.push(error.data.code));
  const pongs = [];
  a.connection.bind('message', (event) => event.event === 'pusher:pong' && pongs.push(event));
  for (let i = 0; i < 300; i += 1) a.send_event('pusher:ping', {});
  await within(
    new Promise((resolve) => {
      const check = setInterval(() => {
        if (pongs.length + errors.length === 300) resolve(clearInterval(check));
      }, 20);
    }),
    'every ping answered or refused',
  );
  assert(errors.length > 0 && errors.every((code) => code === 4301), JSON.stringify(errors.slice(0, 5)));
  assert(pongs.length >= 200, `the burst (200) was served: ${pongs.length}`);
  // The budget refills at limits.command_rate (100/s): a second later it serves again.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const channel = await subscribed(a, 'after-flood');
  const got = once(channel, 'e');
  await serverA.trigger('after-flood', 'e', 1);
  equal(await got, 1, 'still served');
});

test('metrics count Pusher connections', async () => {
  const a = connect(A);
  await connected(a);
  const text = await (await fetch(`http://${ADMIN_A.host}:${ADMIN_A.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('wsgate_pusher_connections '));
  assert(line && Number(line.split(' ')[1]) >= 1, `metric line: ${line}`);
});

/** Every event `channel` emits, in order: [name, data]. */
const everything = (channel) => {
  const seen = [];
  channel.bind_global((event, data) => seen.push([event, data]));
  return seen;
};

test('cache channel: no event yet gives pusher:cache_miss; the last event triggered on one replica is the first a new subscriber on the other gets', async () => {
  const a = connect(A);
  const first = a.subscribe('cache-score');
  const seenFirst = everything(first);
  await once(first, 'pusher:cache_miss');
  equal(seenFirst.map(([event]) => event), ['pusher:subscription_succeeded', 'pusher:cache_miss'], 'a miss, right after subscription_succeeded');
  const live = once(first, 'score');
  await serverA.trigger('cache-score', 'score', { home: 1 });
  await serverA.trigger('cache-score', 'score', { home: 2 });
  await live;

  const b = connect(B);
  const second = b.subscribe('cache-score');
  const seenSecond = everything(second);
  equal(await once(second, 'score'), { home: 2 }, 'the last event, triggered through A, on B');
  equal(seenSecond.map(([event]) => event), ['pusher:subscription_succeeded', 'score'], 'right after subscription_succeeded, no miss');

  // Subscribing again (after an unsubscribe) gets the cached event again.
  b.unsubscribe('cache-score');
  await serverB.trigger('cache-score', 'score', { home: 3 });
  const again = b.subscribe('cache-score');
  equal(await once(again, 'score'), { home: 3 }, 'the new last event');
});

test('private and encrypted cache channels: authorized subscribers get the cached event; a bad signature gets nothing; client events are not cached', async () => {
  await serverB.trigger('private-cache-doc', 'revision', { n: 3 });
  const a = connect(A);
  const doc = a.subscribe('private-cache-doc');
  equal(await once(doc, 'revision'), { n: 3 }, 'private-cache');

  const bad = connect(B, {
    authorize: ({ socketId, channelName }, callback) =>
      callback(null, server(ADMIN_A, 'wrong-secret').authorizeChannel(socketId, channelName)),
  });
  const refused = bad.subscribe('private-cache-doc');
  const seenRefused = everything(refused);
  equal((await once(refused, 'pusher:subscription_error')).status, 401, 'refused');

  const b = connect(B);
  const onB = await subscribed(b, 'private-cache-doc');
  const whisper = once(doc, 'client-edit');
  onB.trigger('client-edit', { by: 'b' });
  equal(await whisper, { by: 'b' }, 'the client event is relayed');
  const c = connect(A);
  const third = c.subscribe('private-cache-doc');
  equal(await once(third, 'revision'), { n: 3 }, 'the last triggered event, not the client event (as Sockudo)');
  equal(seenRefused.map(([event]) => event), ['pusher:subscription_error'], 'nothing for the refused subscriber');

  await serverA.trigger('private-encrypted-cache-vault', 'secret', { code: 7 });
  const d = connect(B);
  const vault = d.subscribe('private-encrypted-cache-vault');
  equal(await once(vault, 'secret'), { code: 7 }, 'decrypted by pusher-js from the cache');
});

test('presence cache channel: the member list, then the cached event', async () => {
  const missing = connect(A, { user: 'pc0' });
  const empty = missing.subscribe('presence-cache-lobby');
  const seenEmpty = everything(empty);
  await once(empty, 'pusher:cache_miss');
  equal(seenEmpty.map(([event]) => event), ['pusher:subscription_succeeded', 'pusher:cache_miss'], 'a miss');
  await serverA.trigger('presence-cache-lobby', 'state', { open: true });
  const b = connect(B, { user: 'pc1' });
  const lobby = b.subscribe('presence-cache-lobby');
  const seen = everything(lobby);
  const state = once(lobby, 'state');
  const members = await once(lobby, 'pusher:subscription_succeeded');
  equal(members.count, 2, 'both members');
  equal(await state, { open: true }, 'the cached event');
  equal(seen.map(([event]) => event), ['pusher:subscription_succeeded', 'state'], 'in that order');
});

test('one user joining a presence channel on two connections at once is announced once (same replica and both replicas)', async () => {
  const watcher = connect(A, { user: 'watcher' });
  const channel = await subscribed(watcher, 'presence-race');
  const added = record(channel, 'pusher:member_added');
  const expected = [];
  for (let round = 0; round < 6; round += 1) {
    const user = `racer${round}`;
    expected.push(user);
    const one = connect(A, { user });
    const two = connect(round % 2 === 0 ? B : A, { user });
    await Promise.all([connected(one), connected(two)]);
    await Promise.all([subscribed(one, 'presence-race'), subscribed(two, 'presence-race')]);
  }
  const marker = once(channel, 'marker');
  await serverB.trigger('presence-race', 'marker', 0);
  await marker;
  equal(added.map((member) => member.id), expected, 'each user announced exactly once');
});

test('a repeated subscribe to a presence channel is answered with the member list', async () => {
  const one = connect(A, { user: 'rep1' });
  const two = connect(B, { user: 'rep2' });
  await subscribed(one, 'presence-repeat');
  await subscribed(two, 'presence-repeat');
  const again = within(
    new Promise((resolve) =>
      one.connection.bind(
        'message',
        (message) =>
          message.event === 'pusher_internal:subscription_succeeded' &&
          message.channel === 'presence-repeat' &&
          resolve(message.data),
      ),
    ),
    'the repeated answer',
  );
  const auth = serverA.authorizeChannel(one.connection.socket_id, 'presence-repeat', {
    user_id: 'rep1',
    user_info: { name: 'name of rep1' },
  });
  one.send_event('pusher:subscribe', { channel: 'presence-repeat', ...auth });
  const data = await again;
  equal(data.presence?.count, 2, 'the member count');
  equal(Object.keys(data.presence.hash).sort(), ['rep1', 'rep2'], 'the members');
  equal(data.presence.hash.rep2, { name: 'name of rep2' }, 'with their info');
});

test('Laravel Echo: listen, private channels, presence here(), whispers', async () => {
  const echo = (gateway, user) => {
    const instance = new Echo({
      broadcaster: 'pusher',
      key: KEY,
      cluster: 'unused',
      wsHost: gateway.host,
      wsPort: gateway.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      disableStats: true,
      Pusher: PusherClient,
      authorizer: (channel) => ({
        authorize: (socketId, callback) => {
          const presence = channel.name.startsWith('presence-')
            ? { user_id: user, user_info: { name: user } }
            : undefined;
          callback(null, serverA.authorizeChannel(socketId, channel.name, presence));
        },
      }),
    });
    clients.push(instance.connector.pusher);
    return instance;
  };
  const one = echo(A, 'ann');
  const two = echo(B, 'ben');
  const shipped = within(new Promise((resolve) => one.channel('orders').listen('.shipped', resolve)), 'Echo listen');
  const orders = within(
    new Promise((resolve) => one.private('orders.1').listen('.paid', resolve)),
    'Echo private listen',
  );
  await within(
    new Promise((resolve) => one.connector.pusher.connection.bind('connected', resolve)),
    'Echo connected',
  );
  // Let both subscriptions be answered before triggering.
  await new Promise((resolve) => one.private('orders.1').subscribed(resolve));
  await serverB.trigger('orders', 'shipped', { id: 7 });
  await serverB.trigger('private-orders.1', 'paid', { id: 8 });
  equal(await shipped, { id: 7 }, 'public');
  equal(await orders, { id: 8 }, 'private');

  await within(new Promise((resolve) => one.join('team').here(resolve)), 'ann here');
  const joining = within(new Promise((resolve) => one.join('team').joining(resolve)), 'ben joining');
  const here = await within(new Promise((resolve) => two.join('team').here(resolve)), 'ben here');
  equal(here.map((member) => member.name).sort(), ['ann', 'ben'], 'here()');
  equal((await joining).name, 'ben', 'joining()');

  const whisper = within(
    new Promise((resolve) => two.private('chat.9').listenForWhisper('typing', resolve)),
    'whisper',
  );
  await new Promise((resolve) => two.private('chat.9').subscribed(resolve));
  await new Promise((resolve) => one.private('chat.9').subscribed(resolve));
  one.private('chat.9').whisper('typing', { who: 'ann' });
  equal(await whisper, { who: 'ann' }, 'whisper');
  one.disconnect();
  two.disconnect();
});

test('sign-in: sendToUser reaches every connection of the user on both replicas; terminate_connections closes them with 4009', async () => {
  const signedIn = (client) =>
    within(
      new Promise((resolve) =>
        client.connection.bind('message', (event) => event.event === 'pusher:signin_success' && resolve()),
      ),
      'signin_success',
    );
  const first = connect(A, { signinAs: 'carol' });
  const second = connect(B, { signinAs: 'carol' });
  const other = connect(B, { signinAs: 'dave' });
  const done = [first, second, other].map(signedIn);
  for (const client of [first, second, other]) client.signin();
  await Promise.all(done);
  // The user channel's subscription follows the sign-in; the next subscribe's
  // answer proves it was processed.
  await Promise.all([first, second, other].map((client) => subscribed(client, 'after-signin')));
  const gotFirst = within(new Promise((resolve) => first.user.bind('note', resolve)), 'first note');
  const gotSecond = within(new Promise((resolve) => second.user.bind('note', resolve)), 'second note');
  const notForDave = [];
  other.user.bind('note', (data) => notForDave.push(data));
  await serverA.sendToUser('carol', 'note', { text: 'hi carol' });
  equal(await Promise.all([gotFirst, gotSecond]), [{ text: 'hi carol' }, { text: 'hi carol' }], 'both');
  const marker = once(other.channel('after-signin'), 'marker');
  await serverA.trigger('after-signin', 'marker', 0);
  await marker;
  equal(notForDave, [], 'not other users');

  const closed = (client) =>
    within(new Promise((resolve) => client.connection.bind('error', resolve)), 'terminated');
  const closes = [closed(first), closed(second)];
  await serverB.terminateUserConnections('carol');
  for (const error of await Promise.all(closes)) {
    equal(error.data?.code ?? error.error?.data?.code, 4009, 'closed with 4009');
  }
  equal(other.connection.state, 'connected', 'other users stay');

  const forged = connect(A, {
    authorize: undefined,
  });
  forged.config.userAuthenticator = ({ socketId }, callback) =>
    callback(null, server(ADMIN_A, 'wrong-secret').authenticateUser(socketId, { id: 'mallory' }));
  const refused = within(new Promise((resolve) => forged.connection.bind('error', resolve)), 'bad signin');
  forged.signin();
  const error = await refused;
  equal(error.data?.code ?? error.error?.data?.code, 4009, 'a forged sign-in closes with 4009');
});

// Last: it stops gateway A.
test('a draining gateway closes Pusher connections with 4200, and pusher-js reconnects', async () => {
  const pid = Number(env('GATEWAY_A_PID'));
  const client = connect(A);
  await subscribed(client, 'drain');
  const closed = within(
    new Promise((resolve) => client.connection.bind('error', resolve)),
    'the drain error',
  );
  const retrying = within(
    new Promise((resolve) =>
      client.connection.bind('state_change', ({ current }) => current === 'connecting' && resolve()),
    ),
    'pusher-js reconnecting',
  );
  process.kill(pid, 'SIGTERM');
  const error = await closed;
  equal(error.data?.code ?? error.error?.data?.code, 4200, 'code');
  await retrying;
});

let failed = 0;
for (const { name, body } of cases) {
  try {
    await body();
    console.log(`ok - ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAILED - ${name}: ${error.stack || error}`);
  }
  for (const client of clients.splice(0)) client.disconnect();
}
console.log(failed === 0 ? `all ${cases.length} cases passed` : `${failed} of ${cases.length} cases failed`);
process.exit(failed === 0 && uncaught === 0 ? 0 : 1);

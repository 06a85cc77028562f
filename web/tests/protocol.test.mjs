// Unit tests of the page's protocol and vocabulary modules, without a browser:
//   node --test tests/protocol.test.mjs      (from web/)

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { LiveSocket, LiveState, backoffMs, isFinalClose, liveUrl } from '../live.js';
import { FITS, KINDS, VEHICLES, countSpots, defaultLevel, fits } from '../model.js';
import { formatAge } from '../format.js';

const spot = (id, state = 'free', v = 0, extra = {}) => ({ id, state, since: null, updated_at: null, v, ...extra });

function geometry() {
  return [
    { ...spot('A', 'free', 1), level: 'L1', kind: 'standard', x: 0, y: 0, w: 3, h: 6 },
    { ...spot('B', 'occupied', 2), level: 'L1', kind: 'ev', x: 3, y: 0, w: 3, h: 6 },
    { ...spot('C', 'unknown', 0), level: 'L2', kind: 'motorcycle', x: 0, y: 0, w: 1.5, h: 6 },
  ];
}

function snapshot(seq, spots, extra = {}) {
  return { type: 'snapshot', lot: 'x', seq, at: '2026-01-01T00:00:00Z', updated_at: null, total: {}, free_by_vehicle: {}, spots, ...extra };
}

function delta(seq, id, state, v = seq) {
  return { type: 'delta', lot: 'x', seq, at: '2026-01-01T00:00:00Z', updated_at: null, spot: spot(id, state, v), total: {}, free_by_vehicle: {} };
}

describe('the compatibility table', () => {
  it('matches docs/live.md', () => {
    const table = {
      motorcycle: ['motorcycle'],
      compact: ['compact', 'standard', 'large'],
      car: ['standard', 'large'],
      van: ['large'],
      ev: ['standard', 'large', 'ev'],
      accessible: ['standard', 'large', 'accessible'],
    };
    for (const vehicle of VEHICLES) {
      for (const kind of KINDS) {
        assert.equal(fits(vehicle, kind), table[vehicle].includes(kind), `${vehicle} in a ${kind} bay`);
      }
    }
    assert.deepEqual(Object.keys(FITS).sort(), [...VEHICLES].sort());
    assert.ok(fits('all', 'motorcycle'));
  });

  it('counts by level and vehicle', () => {
    const spots = geometry();
    assert.deepEqual(countSpots(spots), { spots: 3, free: 1, occupied: 1, held: 0, unknown: 1, out_of_service: 0 });
    assert.equal(countSpots(spots, { level: 'L1' }).spots, 2);
    assert.equal(countSpots(spots, { vehicle: 'ev' }).spots, 2);
    assert.equal(countSpots(spots, { vehicle: 'motorcycle' }).unknown, 1);
  });

  it('opens on the street level', () => {
    assert.equal(defaultLevel([{ id: 'B1', floor: -1 }, { id: 'L2', floor: 1 }, { id: 'L1', floor: 0 }]), 'L1');
    assert.equal(defaultLevel([{ id: 'B2', floor: -2 }, { id: 'B1', floor: -1 }]), 'B2');
    assert.equal(defaultLevel([]), null);
  });
});

describe('LiveState', () => {
  it('ignores deltas until the first snapshot, then replaces every state by it', () => {
    const live = new LiveState();
    live.setGeometry(geometry());
    assert.equal(live.handle(delta(5, 'A', 'occupied')).applied, false);
    const result = live.handle(snapshot(10, [spot('A', 'held', 9), spot('B', 'free', 3), spot('C', 'free', 4)]));
    assert.equal(result.applied, true);
    assert.equal(live.seq, 10);
    assert.equal(live.spots.get('A').state, 'held');
    assert.equal(live.spots.get('B').state, 'free');
    assert.equal(live.spots.get('A').kind, 'standard', 'geometry is kept');
  });

  it('applies seq+1, ignores old ones, and asks for a resync on a gap', () => {
    const live = new LiveState();
    live.setGeometry(geometry());
    live.handle(snapshot(10, [spot('A', 'free', 1), spot('B', 'free', 2), spot('C', 'free', 3)]));

    const next = live.handle(delta(11, 'A', 'occupied'));
    assert.deepEqual([next.applied, next.resync, next.changed], [true, false, ['A']]);
    assert.equal(live.spots.get('A').state, 'occupied');
    assert.equal(live.seq, 11);

    const old = live.handle(delta(11, 'A', 'free'));
    assert.equal(old.applied, false);
    assert.equal(live.spots.get('A').state, 'occupied');

    const gap = live.handle(delta(13, 'B', 'occupied'));
    assert.deepEqual([gap.applied, gap.resync], [false, true]);
    assert.equal(live.spots.get('B').state, 'free');
    assert.equal(live.awaitingSnapshot, true);

    // Until the snapshot, even the "right" next delta is ignored.
    assert.equal(live.handle(delta(12, 'B', 'held')).applied, false);
    live.handle(snapshot(13, [spot('A', 'occupied', 11), spot('B', 'occupied', 13), spot('C', 'free', 3)], { reason: 'resync' }));
    assert.equal(live.seq, 13);
    assert.equal(live.spots.get('B').state, 'occupied');
    assert.equal(live.handle(delta(14, 'C', 'occupied')).applied, true);
  });

  it('never lets a delta overwrite a spot that is already at or past it', () => {
    const live = new LiveState();
    live.setGeometry(geometry());
    live.handle(snapshot(10, [spot('A', 'held', 11), spot('B', 'free', 2), spot('C', 'free', 3)]));
    const result = live.handle(delta(11, 'A', 'free'));
    assert.equal(result.applied, true, 'the sequence still moves on');
    assert.deepEqual(result.changed, []);
    assert.equal(live.spots.get('A').state, 'held');
    assert.equal(live.seq, 11);
  });

  it('takes a heartbeat above its seq as a gap', () => {
    const live = new LiveState();
    live.handle(snapshot(4, []));
    assert.equal(live.handle({ type: 'heartbeat', lot: 'x', seq: 4, at: '2026-01-01T00:00:10Z' }).resync, false);
    assert.equal(live.handle({ type: 'heartbeat', lot: 'x', seq: 6, at: '2026-01-01T00:00:20Z' }).resync, true);
    assert.equal(live.awaitingSnapshot, true);
    // Waiting already: no second request.
    assert.equal(live.handle({ type: 'heartbeat', lot: 'x', seq: 7, at: '2026-01-01T00:00:30Z' }).resync, false);
  });

  it('drops spots a snapshot no longer has and notes ones without geometry', () => {
    const live = new LiveState();
    live.setGeometry(geometry());
    const result = live.handle(snapshot(1, [spot('A'), spot('B'), spot('D')], { reason: 'reloaded' }));
    assert.deepEqual(result.removed, ['C']);
    assert.deepEqual([...live.missingGeometry], ['D']);
    live.setGeometry([...geometry().slice(0, 2), { ...spot('D', 'free', 0), level: 'L2', kind: 'large', x: 0, y: 0, w: 3, h: 6 }]);
    assert.equal(live.missingGeometry.size, 0);
    assert.equal(live.spots.get('D').hasGeometry, true);
  });

  it('keeps a newer live state when geometry is fetched again, and takes a newer REST one', () => {
    const live = new LiveState();
    live.setGeometry(geometry());
    live.handle(snapshot(20, [spot('A', 'occupied', 20), spot('B', 'free', 5), spot('C', 'free', 3)]));
    const again = geometry(); // A free at v 1, B occupied at v 2, C unknown at v 0
    again[2] = { ...again[2], state: 'held', v: 21 };
    live.setGeometry(again);
    assert.equal(live.spots.get('A').state, 'occupied');
    assert.equal(live.spots.get('B').state, 'free');
    assert.equal(live.spots.get('C').state, 'held');
  });

  it('measures freshness on the server clock', () => {
    const live = new LiveState();
    live.handle(snapshot(1, [], { at: '2026-01-01T00:01:00Z', updated_at: '2026-01-01T00:00:57Z' }), 1_000_000);
    // Our clock is off by ages; 2 s after receipt the data is 5 s old.
    assert.equal(live.ageMs(1_002_000), 5_000);
    assert.equal(formatAge(5_000), '5 s ago');
    assert.equal(formatAge(150_000), '2 min ago');
  });
});

describe('reconnecting', () => {
  it('backs off exponentially with jitter up to about 10 s', () => {
    assert.equal(backoffMs(0, { random: () => 0 }), 250);
    assert.equal(backoffMs(0, { random: () => 1 }), 500);
    assert.equal(backoffMs(3, { random: () => 1 }), 4000);
    assert.equal(backoffMs(10, { random: () => 1 }), 10_000);
    assert.equal(backoffMs(10, { random: () => 0 }), 5_000);
    assert.equal(backoffMs(1000, { random: () => 0.5 }), 7_500);
  });

  it('builds ws: and wss: URLs from the page', () => {
    assert.equal(liveUrl('a b', { protocol: 'http:', host: 'h:8080' }), 'ws://h:8080/api/v1/live?lot=a%20b');
    assert.equal(liveUrl('c', { protocol: 'https:', host: 'park.example' }), 'wss://park.example/api/v1/live?lot=c');
  });

  it('knows which closes are final', () => {
    assert.equal(isFinalClose(1001, 'going away'), false);
    assert.equal(isFinalClose(1000, 'lot removed'), true);
    assert.equal(isFinalClose(1006, ''), false);
  });

  class FakeTimers {
    constructor() {
      this.now = 0;
      this.next = 1;
      this.pending = new Map();
    }
    setTimeout(fn, ms) {
      const id = this.next++;
      this.pending.set(id, { fn, at: this.now + ms });
      return id;
    }
    clearTimeout(id) {
      this.pending.delete(id);
    }
    advance(ms) {
      const until = this.now + ms;
      for (;;) {
        const due = [...this.pending.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        this.pending.delete(due[0]);
        this.now = due[1].at;
        due[1].fn();
      }
      this.now = until;
    }
  }

  function harness() {
    const sockets = [];
    class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        this.closedWith = null;
        sockets.push(this);
      }
      send(data) {
        this.sent.push(JSON.parse(data));
      }
      close(code, reason) {
        this.closedWith = { code, reason };
        this.readyState = 3;
      }
      serverOpens() {
        this.readyState = 1;
        this.onopen?.();
      }
      serverSends(message) {
        this.onmessage?.({ data: JSON.stringify(message) });
      }
      serverCloses(code, reason = '') {
        this.readyState = 3;
        this.onclose?.({ code, reason });
      }
    }
    const timers = new FakeTimers();
    const events = [];
    const socket = new LiveSocket('ws://h/api/v1/live?lot=x', {
      WebSocketImpl: FakeWebSocket,
      timers,
      random: () => 1,
      onOpen: () => events.push('open'),
      onMessage: (m) => events.push(m.type),
      onClose: (info) => events.push(info),
    });
    return { sockets, timers, events, socket };
  }

  it('reconnects after a server restart with growing delays, reset by a healthy connection', () => {
    const { sockets, timers, events, socket } = harness();
    socket.start();
    sockets[0].serverOpens();
    sockets[0].serverSends({ type: 'snapshot', seq: 1, spots: [] });
    assert.deepEqual(events.splice(0), ['open', 'snapshot']);

    sockets[0].serverCloses(1001, 'going away');
    assert.equal(events[0].retryInMs, 500);
    assert.equal(events[0].final, false);
    timers.advance(499);
    assert.equal(sockets.length, 1);
    timers.advance(1);
    assert.equal(sockets.length, 2);

    sockets[1].serverCloses(1006);
    timers.advance(1000);
    sockets[2].serverCloses(1006);
    timers.advance(2000);
    const delays = events.filter((e) => typeof e === 'object').map((e) => e.retryInMs);
    assert.deepEqual(delays, [500, 1000, 2000]);

    sockets[3].serverOpens();
    socket.resetBackoff();
    sockets[3].serverCloses(1001);
    assert.equal(events.at(-1).retryInMs, 500);
    socket.stop();
  });

  it('drops a silent socket after 30 s and sends nothing on a closed one', () => {
    const { sockets, timers, events, socket } = harness();
    socket.start();
    sockets[0].serverOpens();
    timers.advance(20_000);
    sockets[0].serverSends({ type: 'heartbeat', seq: 0 });
    timers.advance(29_999);
    assert.equal(sockets[0].closedWith, null);
    assert.equal(socket.send({ type: 'resync' }), true);
    assert.deepEqual(sockets[0].sent, [{ type: 'resync' }]);
    timers.advance(1);
    assert.equal(sockets[0].closedWith.code, 4000);
    assert.equal(socket.send({ type: 'resync' }), false);
    assert.equal(events.at(-1).reason, 'idle');
    timers.advance(500);
    assert.equal(sockets.length, 2);
    socket.stop();
  });

  it('stops for good when the lot is removed', () => {
    const { sockets, timers, events, socket } = harness();
    socket.start();
    sockets[0].serverOpens();
    sockets[0].serverCloses(1000, 'lot removed');
    assert.equal(events.at(-1).final, true);
    timers.advance(60_000);
    assert.equal(sockets.length, 1);
  });
});

describe('alerts', () => {
  it('an emergency alert is held until it ends, and does not touch the sequence', () => {
    const live = new LiveState();
    live.handle(snapshot(10, [spot('A', 'free', 1)]));
    const on = live.handle({ type: 'alert', lot: 'x', alert: 'emergency', active: true, message: 'Leave calmly', at: '2026-01-01T00:00:01Z' });
    assert.equal(on.type, 'alert');
    assert.equal(on.resync, false);
    assert.equal(live.alert.message, 'Leave calmly');
    assert.equal(live.seq, 10);
    live.handle({ type: 'alert', lot: 'x', alert: 'emergency', active: false, message: 'Over', at: '2026-01-01T00:00:02Z' });
    assert.equal(live.alert, null);
  });
});

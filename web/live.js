// The live feed: the WebSocket protocol of docs/live.md (/api/v1/live).
//
// LiveState is the client half of the protocol's sequence rules, free of timers and
// sockets; LiveSocket keeps one socket open with backoff and an idle watchdog. Both are
// plain classes with their clock, timers and WebSocket injectable, so the unit tests in
// tests/protocol.test.mjs drive them without a browser.

const STATE_FIELDS = ['state', 'since', 'updated_at', 'v'];

/**
 * What the page knows about one lot's spots: geometry from GET /spots, states from the
 * feed. `handle(message)` applies a server message by the protocol's rules and says what
 * changed and whether the client must ask for a resync.
 */
export class LiveState {
  constructor() {
    /** id -> spot record: geometry fields (when known) plus state, since, updated_at, v. */
    this.spots = new Map();
    /** Sequence number of the last applied snapshot or delta; null before the first. */
    this.seq = null;
    /** True until a snapshot arrives, and again from a resync request until its snapshot. */
    this.awaitingSnapshot = true;
    this.total = null;
    this.freeByVehicle = null;
    /** The lot's newest sensor reading (RFC 3339) or null. */
    this.updatedAt = null;
    /** The server's clock at its last message (RFC 3339) and our clock then (ms). */
    this.serverAt = null;
    this.receivedAt = null;
    /** Spot ids the feed named that have no geometry yet (the lot's model changed). */
    this.missingGeometry = new Set();
    /** The alert in force for the lot (an emergency) or null. */
    this.alert = null;
  }

  /**
   * Installs the spots of GET /api/v1/lots/{lot}/spots. States in it are shown until the
   * feed says otherwise; a spot the feed already moved further (higher v) keeps its state.
   * Spots that are not in the list are dropped. Returns the ids that were dropped.
   */
  setGeometry(spots) {
    const next = new Map();
    for (const spot of spots) {
      const known = this.spots.get(spot.id);
      const record = { ...spot };
      if (known && known.v != null && (spot.v == null || known.v > spot.v)) {
        for (const field of STATE_FIELDS) record[field] = known[field];
      }
      record.hasGeometry = true;
      next.set(spot.id, record);
      this.missingGeometry.delete(spot.id);
    }
    const dropped = [...this.spots.keys()].filter((id) => !next.has(id));
    this.spots = next;
    return dropped;
  }

  /** Marks the state as waiting for a snapshot (after sending a resync or reconnecting). */
  expectSnapshot() {
    this.awaitingSnapshot = true;
  }

  /**
   * Applies one server message. Returns {type, applied, changed: [ids], removed: [ids],
   * resync}: `applied` whether it changed what the page shows, `changed` the spots whose
   * state may differ, `removed` spots no longer in the lot, `resync` true when the client
   * must send {"type":"resync"} (a gap).
   */
  handle(message, nowMs = Date.now()) {
    const result = { type: message?.type ?? null, applied: false, changed: [], removed: [], resync: false };
    if (!message || typeof message !== 'object') return result;
    if (typeof message.at === 'string') {
      this.serverAt = message.at;
      this.receivedAt = nowMs;
    }
    switch (message.type) {
      case 'snapshot':
        return this.#snapshot(message, result);
      case 'delta':
        return this.#delta(message, result);
      case 'alert':
        // Not part of the sequence: an emergency starts or ends, whatever the spots do.
        this.alert = message.active === true ? message : null;
        result.applied = true;
        return result;
      case 'heartbeat':
        // A heartbeat carries the last seq the server sent us: above ours means we lost one.
        if (!this.awaitingSnapshot && Number.isInteger(message.seq) && this.seq !== null && message.seq > this.seq) {
          this.awaitingSnapshot = true;
          result.resync = true;
        }
        return result;
      default:
        return result;
    }
  }

  #snapshot(message, result) {
    const seen = new Set();
    for (const spot of Array.isArray(message.spots) ? message.spots : []) {
      if (!spot || typeof spot.id !== 'string') continue;
      seen.add(spot.id);
      const record = this.spots.get(spot.id);
      if (record) {
        for (const field of STATE_FIELDS) record[field] = spot[field] ?? null;
      } else {
        this.spots.set(spot.id, { id: spot.id, ...pickState(spot), hasGeometry: false });
        this.missingGeometry.add(spot.id);
      }
      result.changed.push(spot.id);
    }
    for (const id of [...this.spots.keys()]) {
      if (!seen.has(id)) {
        this.spots.delete(id);
        this.missingGeometry.delete(id);
        result.removed.push(id);
      }
    }
    this.seq = Number.isInteger(message.seq) ? message.seq : this.seq;
    this.awaitingSnapshot = false;
    this.#lotFields(message);
    result.applied = true;
    return result;
  }

  #delta(message, result) {
    if (this.awaitingSnapshot || this.seq === null || !Number.isInteger(message.seq)) return result;
    if (message.seq <= this.seq) return result; // already covered
    if (message.seq > this.seq + 1) {
      // A gap: everything after it is suspect until a fresh snapshot.
      this.awaitingSnapshot = true;
      result.resync = true;
      return result;
    }
    this.seq = message.seq;
    this.#lotFields(message);
    result.applied = true;
    const spot = message.spot;
    if (spot && typeof spot.id === 'string') {
      const record = this.spots.get(spot.id);
      if (!record) {
        this.spots.set(spot.id, { id: spot.id, ...pickState(spot), hasGeometry: false });
        this.missingGeometry.add(spot.id);
        result.changed.push(spot.id);
      } else if (record.v == null || record.v < message.seq) {
        for (const field of STATE_FIELDS) record[field] = spot[field] ?? null;
        if (record.v == null) record.v = message.seq;
        result.changed.push(spot.id);
      }
    }
    return result;
  }

  #lotFields(message) {
    if (message.total && typeof message.total === 'object') this.total = message.total;
    if (message.free_by_vehicle && typeof message.free_by_vehicle === 'object') {
      this.freeByVehicle = message.free_by_vehicle;
    }
    if ('updated_at' in message) this.updatedAt = message.updated_at ?? null;
  }

  /**
   * Milliseconds since the lot's newest sensor reading, measured on the server's clock (the
   * `at` of its last message) so a phone with a wrong clock still reads right; null if none.
   */
  ageMs(nowMs = Date.now()) {
    if (!this.updatedAt) return null;
    const updated = Date.parse(this.updatedAt);
    if (Number.isNaN(updated)) return null;
    let serverNow = nowMs;
    const at = this.serverAt ? Date.parse(this.serverAt) : NaN;
    if (!Number.isNaN(at) && this.receivedAt !== null) serverNow = at + (nowMs - this.receivedAt);
    return Math.max(0, serverNow - updated);
  }
}

function pickState(spot) {
  const out = {};
  for (const field of STATE_FIELDS) out[field] = spot[field] ?? null;
  return out;
}

/** Backoff before reconnect attempt `attempt` (0-based): exponential, capped, half jittered. */
export function backoffMs(attempt, { baseMs = 500, capMs = 10_000, random = Math.random } = {}) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** The feed's URL for `lot`, ws: or wss: matching the page. */
export function liveUrl(lot, location = globalThis.location) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/api/v1/live?lot=${encodeURIComponent(lot)}`;
}

/** Whether a close ends the feed for good: the server removed the lot (docs/live.md). */
export function isFinalClose(code, reason) {
  return code === 4404 || (code === 1000 && /lot removed/i.test(reason ?? ''));
}

/**
 * One WebSocket kept open: reconnects with backoff after any close but a final one, and
 * drops a socket that stayed silent for `idleMs` (the server sends a heartbeat every 10 s).
 *
 * Callbacks: onOpen(), onMessage(parsed JSON), onClose({code, reason, final, retryInMs,
 * attempt}). `resetBackoff()` is the caller's to call once a connection proved healthy (its
 * first snapshot), so a server that accepts and then drops at once is not hammered.
 */
export class LiveSocket {
  constructor(url, {
    onOpen = () => {},
    onMessage = () => {},
    onClose = () => {},
    WebSocketImpl = globalThis.WebSocket,
    timers = globalThis,
    random = Math.random,
    idleMs = 30_000,
    baseMs = 500,
    capMs = 10_000,
  } = {}) {
    Object.assign(this, { url, onOpen, onMessage, onClose, WebSocketImpl, timers, random, idleMs, baseMs, capMs });
    this.ws = null;
    this.attempt = 0;
    this.stopped = true;
    this.retryTimer = null;
    this.idleTimer = null;
  }

  start() {
    this.stopped = false;
    if (!this.ws && this.retryTimer === null) this.#connect();
  }

  stop() {
    this.stopped = true;
    this.#clearTimers();
    this.#drop(1000, 'client leaving');
  }

  /** Reconnects now (after `online` or a page coming back to the foreground). */
  reconnectNow({ resetBackoff = false } = {}) {
    if (this.stopped) return;
    if (resetBackoff) this.attempt = 0;
    this.#clearTimers();
    this.#drop(4000, 'reconnecting');
    this.#connect();
  }

  /** Closes the current socket and retries with backoff, as if the server had dropped it. */
  restart(reason = 'restart') {
    if (this.stopped || !this.ws) return;
    this.#drop(4000, reason);
    this.#closed(4000, reason);
  }

  resetBackoff() {
    this.attempt = 0;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  send(message) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  #connect() {
    this.retryTimer = null;
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (error) {
      this.#closed(1006, String(error?.message ?? error));
      return;
    }
    this.ws = ws;
    // The watchdog runs from the start: a connect that hangs is dropped like a silent socket.
    this.#armIdle();
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.#armIdle();
      this.onOpen();
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.#armIdle();
      if (typeof event.data !== 'string') return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        console.warn('live feed: a frame that is not JSON was ignored');
        return;
      }
      this.onMessage(message);
    };
    ws.onerror = () => {
      // A close event always follows; nothing to do here.
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.#closed(event.code, event.reason);
    };
  }

  #closed(code, reason) {
    this.#clearTimers();
    this.ws = null;
    const final = isFinalClose(code, reason);
    if (this.stopped || final) {
      this.onClose({ code, reason, final: true, retryInMs: null, attempt: this.attempt });
      return;
    }
    const retryInMs = backoffMs(this.attempt, { baseMs: this.baseMs, capMs: this.capMs, random: this.random });
    this.attempt += 1;
    this.retryTimer = this.timers.setTimeout(() => this.#connect(), retryInMs);
    this.onClose({ code, reason, final: false, retryInMs, attempt: this.attempt });
  }

  #armIdle() {
    if (this.idleTimer !== null) this.timers.clearTimeout(this.idleTimer);
    this.idleTimer = this.timers.setTimeout(() => {
      this.idleTimer = null;
      // Silence for this long means a dead path; closing it cleanly could hang as long.
      this.restart('idle');
    }, this.idleMs);
  }

  #drop(code, reason) {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing.
    }
  }

  #clearTimers() {
    if (this.retryTimer !== null) this.timers.clearTimeout(this.retryTimer);
    if (this.idleTimer !== null) this.timers.clearTimeout(this.idleTimer);
    this.retryTimer = null;
    this.idleTimer = null;
  }
}

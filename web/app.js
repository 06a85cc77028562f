// The drivers' live map: the lot list, the chosen lot's counts, filters and floor plans,
// kept live by the WebSocket feed. Wiring only; the protocol is in live.js, the drawing in
// plan.js, the vocabulary in model.js.

import { api } from './api.js';
import { formatAge, plural } from './format.js';
import { LiveSocket, LiveState, liveUrl } from './live.js';
import {
  KINDS, KIND_NAMES, STATES, STATE_NAMES, VEHICLE_FOR, countByLevel, countSpots, defaultLevel, fits, isVehicle, sortLevels,
} from './model.js';
import { kindIcon, renderLevel, updateSpot } from './plan.js';

/** Data older than this (the lot's newest sensor reading) is shown as stale. */
const STALE_AFTER_MS = 120_000;
/** A resync whose snapshot has not come by then: drop the socket and start over. */
const RESYNC_TIMEOUT_MS = 15_000;
/** How often the other lots' counts in the list are refreshed. */
const LOTS_REFRESH_MS = 60_000;
/** Failed reconnects in a row after which the page calls itself offline (it keeps trying). */
const OFFLINE_AFTER_ATTEMPTS = 5;

const $ = (id) => document.getElementById(id);

const app = {
  lots: [],
  lotsLoaded: false,
  lotId: null,
  lot: null,
  levels: [],
  level: null,
  vehicle: 'all',
  live: null,
  socket: null,
  /** level id -> {tab, panel, svg, elements}; a level's SVG is built when first shown. */
  plans: new Map(),
  /** Bumped on every lot switch, so answers for a previous lot are dropped. */
  generation: 0,
  liveStatus: 'offline',
  everConnected: false,
  retryInMs: null,
  resyncTimer: null,
  reloading: null,
  selectedSpot: null,
  countsFrame: 0,
};

// ---------------------------------------------------------------------------------------
// URL and connection status

function readUrl() {
  const params = new URLSearchParams(window.location.search);
  const vehicle = params.get('vehicle');
  return {
    lot: params.get('lot') || null,
    level: params.get('level') || null,
    vehicle: vehicle && isVehicle(vehicle) ? vehicle : 'all',
  };
}

function writeUrl() {
  // Ours first, in a fixed order; anything else the URL carried stays after them.
  const params = new URLSearchParams();
  if (app.lotId) params.set('lot', app.lotId);
  if (app.lotId && app.level && app.level !== defaultLevel(app.levels)) params.set('level', app.level);
  if (app.vehicle !== 'all') params.set('vehicle', app.vehicle);
  for (const [key, value] of new URLSearchParams(window.location.search)) {
    if (!['lot', 'level', 'vehicle'].includes(key)) params.append(key, value);
  }
  const query = params.toString();
  const url = `${window.location.pathname}${query ? `?${query}` : ''}${window.location.hash}`;
  if (url !== `${window.location.pathname}${window.location.search}${window.location.hash}`) {
    window.history.replaceState(null, '', url);
  }
}

/** "connected" | "reconnecting" | "offline", mirrored in body[data-live] for tests. */
function setLive(status) {
  app.liveStatus = status;
  document.body.dataset.live = status;
  let text;
  if (status === 'connected') text = 'live';
  else if (status === 'reconnecting') {
    const when = app.retryInMs ? ` in ${Math.max(1, Math.round(app.retryInMs / 1000))} s` : '…';
    text = app.everConnected ? `reconnecting${when}` : 'connecting…';
  } else text = app.socket && app.retryInMs ? 'offline · retrying' : 'offline';
  $('conn-text').textContent = text;
  $('conn').dataset.status = status;
  updateFreshness();
}

function showNotice(message) {
  const notice = $('notice');
  notice.textContent = message ?? '';
  notice.hidden = !message;
}

// ---------------------------------------------------------------------------------------
// The lot list

async function loadLots() {
  try {
    const { lots } = await api.lots();
    app.lots = Array.isArray(lots) ? lots : [];
    app.lotsLoaded = true;
    renderLotList();
    return true;
  } catch (error) {
    if (!app.lots.length) {
      $('lot-list').replaceChildren(listNote(`Car parks could not be loaded (${error.message}).`));
    }
    return false;
  }
}

function listNote(text) {
  const li = document.createElement('li');
  li.className = 'muted';
  li.textContent = text;
  return li;
}

function freeOf(summary) {
  if (app.vehicle !== 'all') return summary.free_by_vehicle?.[app.vehicle] ?? null;
  return summary.total?.free ?? null;
}

function renderLotList() {
  const list = $('lot-list');
  if (!app.lotsLoaded) return; // "Loading…" stays until the list comes
  if (!app.lots.length) {
    list.replaceChildren(listNote('No car parks yet.'));
    return;
  }
  const items = app.lots.map((lot) => {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'lot-button';
    button.dataset.lot = lot.id;
    if (lot.id === app.lotId) button.setAttribute('aria-current', 'true');
    const name = document.createElement('span');
    name.className = 'lot-button-name';
    name.textContent = lot.name || lot.id;
    const free = document.createElement('span');
    free.className = 'lot-button-free';
    const n = lot.id === app.lotId && app.live ? currentFree() : freeOf(lot);
    free.textContent = n === null ? '–' : `${n} free`;
    free.dataset.zero = n === 0 ? 'true' : 'false';
    button.append(name, free);
    if (lot.address) {
      const address = document.createElement('span');
      address.className = 'lot-button-address';
      address.textContent = lot.address;
      button.append(address);
    }
    button.addEventListener('click', () => selectLot(lot.id));
    li.append(button);
    return li;
  });
  list.replaceChildren(...items);
}

// ---------------------------------------------------------------------------------------
// Choosing a lot

function teardown() {
  app.socket?.stop();
  app.socket = null;
  clearTimeout(app.resyncTimer);
  app.resyncTimer = null;
  app.live = null;
  app.lot = null;
  app.levels = [];
  app.level = null;
  app.plans = new Map();
  app.everConnected = false;
  app.retryInMs = null;
  app.selectedSpot = null;
  cancelAnimationFrame(app.countsFrame);
  app.countsFrame = 0;
  $('plans').replaceChildren();
  $('level-tabs').replaceChildren();
  delete document.body.dataset.seq;
}

async function selectLot(id, { level = null } = {}) {
  if (id === app.lotId) return;
  teardown();
  const generation = ++app.generation;
  app.lotId = id;
  showNotice(null);
  showEmergency(null);
  writeUrl();
  renderLotList();
  setLive('offline');
  $('empty').hidden = true;
  $('lot').hidden = false;
  $('lot-name').textContent = app.lots.find((l) => l.id === id)?.name ?? id;
  $('lot-address').textContent = 'Loading…';

  let lot;
  let spots;
  try {
    [lot, spots] = await Promise.all([api.lot(id), api.spots(id)]);
  } catch (error) {
    if (generation !== app.generation) return;
    app.lotId = null;
    writeUrl();
    renderLotList();
    $('lot').hidden = true;
    $('empty').hidden = false;
    showNotice(error.status === 404
      ? `There is no car park “${id}”. Choose one from the list.`
      : `This car park could not be loaded: ${error.message}`);
    return;
  }
  if (generation !== app.generation) return;

  app.lot = lot;
  app.live = new LiveState();
  app.live.setGeometry(Array.isArray(spots.spots) ? spots.spots : []);
  // Until the feed's snapshot comes, show what the REST answer said.
  app.live.total = lot.total ?? null;
  app.live.freeByVehicle = lot.free_by_vehicle ?? null;
  app.live.updatedAt = lot.updated_at ?? null;
  app.levels = sortLevels(Array.isArray(lot.levels) ? lot.levels : []);
  const wanted = level && app.levels.some((l) => l.id === level) ? level : defaultLevel(app.levels);

  $('lot-name').textContent = lot.name || lot.id;
  $('lot-address').textContent = lot.address || '';
  buildLevels(wanted);
  updateCounts();
  renderLotList();
  writeUrl();
  startFeed(generation);
}

// ---------------------------------------------------------------------------------------
// The live feed

function startFeed(generation) {
  const socket = new LiveSocket(liveUrl(app.lotId), {
    onOpen: () => {},
    onMessage: (message) => {
      if (generation === app.generation) onFeedMessage(message);
    },
    onClose: (info) => {
      if (generation === app.generation) onFeedClosed(info);
    },
  });
  app.socket = socket;
  setLive('reconnecting');
  socket.start();
}

function onFeedMessage(message) {
  const live = app.live;
  if (!live) return;
  if (message.type === 'error') {
    console.warn('live feed: the server refused a message:', message.error);
    return;
  }
  const result = live.handle(message);
  if (result.resync) requestResync();
  if (result.type === 'alert') {
    showEmergency(live.alert);
    return;
  }

  if (result.type === 'snapshot' && result.applied) {
    clearTimeout(app.resyncTimer);
    app.resyncTimer = null;
    app.socket.resetBackoff();
    app.everConnected = true;
    app.retryInMs = null;
    if (app.liveStatus !== 'connected') setLive('connected');
    if (message.reason === 'reloaded') reloadGeometry();
  }
  if (live.missingGeometry.size) reloadGeometry();

  for (const id of result.removed) removeSpotElement(id);
  if (result.type === 'snapshot') {
    refreshSpots();
  } else {
    for (const id of result.changed) refreshSpot(id);
  }
  if (result.applied) {
    document.body.dataset.seq = String(live.seq);
    scheduleCounts();
  }
  updateFreshness();
}

/** The lot's emergency banner: shown while an alert is in force, hidden when it ends. */
function showEmergency(alert) {
  const banner = $('emergency');
  banner.textContent = alert ? alert.message : '';
  banner.hidden = !alert;
  document.body.dataset.emergency = alert ? 'on' : 'off';
}

function requestResync() {
  app.live?.expectSnapshot();
  if (!app.socket?.send({ type: 'resync' })) return;
  clearTimeout(app.resyncTimer);
  app.resyncTimer = setTimeout(() => {
    app.resyncTimer = null;
    if (app.live?.awaitingSnapshot) app.socket?.restart('resync timed out');
  }, RESYNC_TIMEOUT_MS);
}

function onFeedClosed({ final, retryInMs, attempt, code, reason }) {
  clearTimeout(app.resyncTimer);
  app.resyncTimer = null;
  app.live?.expectSnapshot();
  app.retryInMs = retryInMs;
  if (final) {
    app.socket?.stop();
    setLive('offline');
    showNotice(`Live updates for this car park have ended${reason ? ` (${reason})` : ''}.`);
    loadLots();
    return;
  }
  const offline = navigator.onLine === false || attempt > OFFLINE_AFTER_ATTEMPTS;
  setLive(offline ? 'offline' : 'reconnecting');
  if (code === 1001) console.info('live feed: the server is restarting; reconnecting');
}

/** Fetches the lot and its spots again (the lot's model changed) and redraws. */
function reloadGeometry() {
  if (app.reloading || !app.lotId) return;
  const generation = app.generation;
  app.reloading = Promise.all([api.lot(app.lotId), api.spots(app.lotId)])
    .then(([lot, spots]) => {
      if (generation !== app.generation || !app.live) return;
      app.lot = lot;
      $('lot-name').textContent = lot.name || lot.id;
      $('lot-address').textContent = lot.address || '';
      app.live.setGeometry(Array.isArray(spots.spots) ? spots.spots : []);
      app.levels = sortLevels(Array.isArray(lot.levels) ? lot.levels : []);
      const keep = app.levels.some((l) => l.id === app.level) ? app.level : defaultLevel(app.levels);
      buildLevels(keep);
      updateCounts();
    })
    .catch((error) => {
      if (generation === app.generation) showNotice(`The car park's layout could not be reloaded: ${error.message}`);
    })
    .finally(() => {
      app.reloading = null;
    });
}

// ---------------------------------------------------------------------------------------
// Levels and plans

function buildLevels(activeLevel) {
  const tabs = $('level-tabs');
  const panels = $('plans');
  tabs.replaceChildren();
  panels.replaceChildren();
  app.plans = new Map();
  for (const level of app.levels) {
    const tab = document.createElement('button');
    tab.type = 'button';
    tab.setAttribute('role', 'tab');
    tab.id = `tab-${level.id}`;
    tab.dataset.level = level.id;
    tab.setAttribute('aria-controls', `panel-${level.id}`);
    const name = document.createElement('span');
    name.className = 'tab-name';
    name.textContent = level.name || level.id;
    const free = document.createElement('span');
    free.className = 'tab-free';
    tab.append(name, free);
    tab.addEventListener('click', () => showLevel(level.id));
    tab.addEventListener('keydown', onTabKey);
    tabs.append(tab);

    const panel = document.createElement('div');
    panel.setAttribute('role', 'tabpanel');
    panel.id = `panel-${level.id}`;
    panel.className = 'plan-panel';
    panel.setAttribute('aria-labelledby', tab.id);
    panel.hidden = true;
    panels.append(panel);
    app.plans.set(level.id, { level, tab, panel, elements: null });
  }
  if (!app.levels.length) panels.append(listNote('This car park has no levels yet.'));
  if (activeLevel) showLevel(activeLevel, { focus: false });
}

function onTabKey(event) {
  const ids = app.levels.map((l) => l.id);
  const at = ids.indexOf(event.currentTarget.dataset.level);
  let next = null;
  if (event.key === 'ArrowRight' || event.key === 'ArrowDown') next = ids[(at + 1) % ids.length];
  else if (event.key === 'ArrowLeft' || event.key === 'ArrowUp') next = ids[(at - 1 + ids.length) % ids.length];
  else if (event.key === 'Home') next = ids[0];
  else if (event.key === 'End') next = ids[ids.length - 1];
  if (next) {
    event.preventDefault();
    showLevel(next, { focus: true });
  }
}

function showLevel(id, { focus = false } = {}) {
  const plan = app.plans.get(id);
  if (!plan) return;
  app.level = id;
  for (const [levelId, other] of app.plans) {
    const active = levelId === id;
    other.tab.setAttribute('aria-selected', active ? 'true' : 'false');
    other.tab.tabIndex = active ? 0 : -1;
    other.panel.hidden = !active;
  }
  if (!plan.elements) drawLevel(plan);
  if (focus) plan.tab.focus();
  writeUrl();
}

function spotsOn(levelId) {
  const out = [];
  for (const spot of app.live?.spots.values() ?? []) {
    if (spot.hasGeometry && spot.level === levelId) out.push(spot);
  }
  return out;
}

function drawLevel(plan) {
  const spots = spotsOn(plan.level.id);
  const { svg, elements } = renderLevel(plan.level, spots);
  plan.elements = elements;
  plan.panel.replaceChildren(svg);
  for (const spot of spots) updateSpot(elements.get(spot.id), spot, app.vehicle);
}

function elementOf(id) {
  const spot = app.live?.spots.get(id);
  if (!spot?.hasGeometry) return null;
  return app.plans.get(spot.level)?.elements?.get(id) ?? null;
}

function refreshSpot(id) {
  const element = elementOf(id);
  if (element) updateSpot(element, app.live.spots.get(id), app.vehicle);
  if (id === app.selectedSpot) describeSpot(id);
}

function refreshSpots() {
  for (const plan of app.plans.values()) {
    if (!plan.elements) continue;
    for (const [id, element] of plan.elements) {
      const spot = app.live.spots.get(id);
      if (spot) updateSpot(element, spot, app.vehicle);
    }
  }
  if (app.selectedSpot) describeSpot(app.selectedSpot);
}

function removeSpotElement(id) {
  for (const plan of app.plans.values()) {
    const element = plan.elements?.get(id);
    if (element) {
      element.remove();
      plan.elements.delete(id);
    }
  }
}

function describeSpot(id) {
  const spot = app.live?.spots.get(id);
  const info = $('spot-info');
  if (!spot) {
    info.textContent = 'Tap a space for details.';
    return;
  }
  const zone = app.lot?.zones?.find((z) => z.id === spot.zone)?.name;
  const since = spot.since ? Date.parse(spot.since) : NaN;
  const parts = [
    `Space ${spot.label ?? spot.id}`,
    KIND_NAMES[spot.kind] ?? spot.kind,
    STATE_NAMES[spot.state] ?? spot.state,
  ];
  if (!Number.isNaN(since)) {
    parts[2] += ` since ${new Date(since).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`;
  }
  if (zone) parts.push(zone);
  if (app.vehicle !== 'all' && !fits(app.vehicle, spot.kind)) parts.push(`not for ${VEHICLE_FOR[app.vehicle]}`);
  info.textContent = parts.join(' · ');
}

// ---------------------------------------------------------------------------------------
// Counts, filter, freshness

function currentFree() {
  const live = app.live;
  if (!live) return null;
  if (app.vehicle === 'all') return live.total?.free ?? countSpots(live.spots.values()).free;
  return live.freeByVehicle?.[app.vehicle] ?? countSpots(live.spots.values(), { vehicle: app.vehicle }).free;
}

/** Recounts once per frame however many deltas arrive in it. */
function scheduleCounts() {
  if (app.countsFrame) return;
  app.countsFrame = requestAnimationFrame(() => {
    app.countsFrame = 0;
    updateCounts();
  });
}

function updateCounts() {
  const live = app.live;
  if (!live) return;
  const all = [...live.spots.values()];
  const total = live.total ?? countSpots(all);
  const free = currentFree();

  const headline = $('headline-free');
  headline.dataset.vehicle = app.vehicle;
  headline.dataset.free = String(free);
  headline.querySelector('.n').textContent = String(free);
  const usable = countSpots(all, { vehicle: app.vehicle === 'all' ? null : app.vehicle }).spots;
  if (app.vehicle === 'all') {
    headline.querySelector('.what').textContent = 'free';
    $('headline-of').textContent = `of ${plural(total.spots ?? all.length, 'space')}`;
  } else {
    headline.querySelector('.what').textContent = `free for ${VEHICLE_FOR[app.vehicle]}`;
    $('headline-of').textContent = `of ${plural(usable, 'space')} that fit`;
  }
  headline.classList.toggle('none', free === 0);

  for (const li of $('counts').children) {
    li.querySelector('b').textContent = String(total[li.dataset.state] ?? 0);
  }

  const byLevel = countByLevel(all, app.vehicle === 'all' ? null : app.vehicle);
  for (const [levelId, plan] of app.plans) {
    const levelFree = byLevel.get(levelId)?.free ?? 0;
    plan.tab.querySelector('.tab-free').textContent = `${levelFree} free`;
    plan.tab.dataset.free = String(levelFree);
  }

  const summary = app.lots.find((l) => l.id === app.lotId);
  if (summary) {
    summary.total = total;
    if (live.freeByVehicle) summary.free_by_vehicle = live.freeByVehicle;
    const badge = document.querySelector(`.lot-button[data-lot="${CSS.escape(app.lotId)}"] .lot-button-free`);
    if (badge) {
      badge.textContent = `${free} free`;
      badge.dataset.zero = free === 0 ? 'true' : 'false';
    }
  }
}

function setVehicle(vehicle) {
  app.vehicle = isVehicle(vehicle) ? vehicle : 'all';
  for (const button of $('filters').querySelectorAll('button[data-vehicle]')) {
    button.setAttribute('aria-pressed', button.dataset.vehicle === app.vehicle ? 'true' : 'false');
  }
  document.body.dataset.vehicle = app.vehicle;
  if (app.live) {
    refreshSpots();
    updateCounts();
  }
  renderLotList();
  writeUrl();
}

function updateFreshness() {
  const text = $('freshness');
  const banner = $('stale-banner');
  const live = app.live;
  if (!live || !app.lotId) {
    text.textContent = '';
    banner.hidden = true;
    document.body.dataset.stale = 'false';
    return;
  }
  const age = live.ageMs();
  const ageText = age === null ? null : formatAge(age);
  text.textContent = ageText === null ? 'no sensor data yet' : `updated ${ageText}`;
  const old = age !== null && age > STALE_AFTER_MS;
  const down = app.liveStatus !== 'connected';
  const stale = old || down;
  document.body.dataset.stale = stale ? 'true' : 'false';
  $('main').classList.toggle('is-stale', stale);
  if (!stale) {
    banner.hidden = true;
    return;
  }
  const since = ageText === null ? '' : ` The newest sensor reading is from ${ageText}.`;
  banner.textContent = down
    ? `Not live: ${app.liveStatus === 'offline' ? 'no connection' : 'reconnecting'}. The map may be out of date.${since}`
    : `No sensor has reported for ${formatAge(age).replace(' ago', '')}: the map may be out of date.`;
  banner.hidden = false;
}

// ---------------------------------------------------------------------------------------
// Legend and start

function buildLegend() {
  const states = STATES.map((state) => {
    const li = document.createElement('li');
    li.dataset.state = state;
    li.append(miniSpot(state, null), document.createTextNode(STATE_NAMES[state]));
    return li;
  });
  $('legend-states').replaceChildren(...states);
  const kinds = KINDS.filter((kind) => kind !== 'standard').map((kind) => {
    const li = document.createElement('li');
    li.dataset.kind = kind;
    li.append(miniSpot('free', kind), document.createTextNode(KIND_NAMES[kind]));
    return li;
  });
  $('legend-kinds').replaceChildren(...kinds);
}

/** A small drawn spot for the legend, styled by the same CSS as the plan's spots. */
function miniSpot(state, kind) {
  const ns = 'http://www.w3.org/2000/svg';
  const root = document.createElementNS(ns, 'svg');
  root.setAttribute('viewBox', '0 0 3 4');
  root.setAttribute('class', 'mini');
  root.setAttribute('aria-hidden', 'true');
  const g = document.createElementNS(ns, 'g');
  g.setAttribute('class', 'spot');
  g.setAttribute('data-state', state);
  const rect = document.createElementNS(ns, 'rect');
  for (const [k, v] of Object.entries({ class: 'bay', x: 0.15, y: 0.15, width: 2.7, height: 3.7 })) rect.setAttribute(k, String(v));
  g.append(rect);
  if (state === 'occupied') {
    const car = document.createElementNS(ns, 'rect');
    for (const [k, v] of Object.entries({ class: 'car', x: 0.65, y: 0.6, width: 1.7, height: 2.8, rx: 0.5 })) car.setAttribute(k, String(v));
    g.append(car);
  }
  if (kind) {
    const badge = document.createElementNS(ns, 'circle');
    for (const [k, v] of Object.entries({ class: 'badge', cx: 1.5, cy: 2, r: 1.15 })) badge.setAttribute(k, String(v));
    g.append(badge);
    kindIcon(kind, { x: 0.6, y: 1.1, size: 1.8, parent: g });
  }
  root.append(g);
  return root;
}

function start() {
  buildLegend();
  const wanted = readUrl();
  for (const button of $('filters').querySelectorAll('button[data-vehicle]')) {
    button.addEventListener('click', () => setVehicle(button.dataset.vehicle));
  }
  setVehicle(wanted.vehicle);
  $('plans').addEventListener('click', (event) => {
    const element = event.target.closest?.('[data-spot]');
    if (!element) return;
    app.selectedSpot = element.getAttribute('data-spot');
    describeSpot(app.selectedSpot);
  });
  setLive('offline');

  window.addEventListener('offline', () => {
    if (app.socket) setLive('offline');
  });
  window.addEventListener('online', () => app.socket?.reconnectNow({ resetBackoff: true }));
  window.addEventListener('pageshow', (event) => {
    if (event.persisted) app.socket?.reconnectNow({ resetBackoff: true });
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && app.socket && !app.socket.open) {
      app.socket.reconnectNow({ resetBackoff: true });
    }
  });
  setInterval(updateFreshness, 1000);
  setInterval(() => {
    if (document.visibilityState === 'visible') loadLots();
  }, LOTS_REFRESH_MS);

  if (wanted.lot) selectLot(wanted.lot, { level: wanted.level });
  loadLots().then((ok) => {
    if (ok && !app.lotId && !wanted.lot && app.lots.length === 1) selectLot(app.lots[0].id);
  });
}

start();

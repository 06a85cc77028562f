// The floor plan of one level as inline SVG: one <g data-spot> per spot, in the level's own
// coordinate space (metres, via the viewBox), so the browser scales it to any width.

import { KIND_NAMES, STATE_NAMES, fits } from './model.js';
import { num } from './format.js';

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Kinds that carry an icon (standard bays carry none). */
const KIND_ICONS = new Set(['ev', 'accessible', 'motorcycle', 'compact', 'large']);

function svg(name, attributes = {}, parent = null) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) element.setAttribute(key, String(value));
  }
  if (parent) parent.appendChild(element);
  return element;
}

/** Rotates point (x, y) by `degrees` clockwise around (cx, cy) (SVG's y points down). */
function rotatePoint(x, y, cx, cy, degrees) {
  const r = (degrees * Math.PI) / 180;
  const dx = x - cx;
  const dy = y - cy;
  return [cx + dx * Math.cos(r) - dy * Math.sin(r), cy + dx * Math.sin(r) + dy * Math.cos(r)];
}

/** `<use>` of a kind's icon symbol (defined once in index.html). */
export function kindIcon(kind, { x = 0, y = 0, size = 1, parent = null } = {}) {
  return svg('use', { href: `#icon-${kind}`, x: num(x), y: num(y), width: num(size), height: num(size), class: 'icon' }, parent);
}

/** The text of a spot's <title>: "1.001 – EV charging – free". */
export function spotTitle(spot) {
  const kind = KIND_NAMES[spot.kind] ?? spot.kind;
  const state = STATE_NAMES[spot.state] ?? spot.state ?? 'unknown';
  return `${spot.label ?? spot.id} – ${kind} – ${state}`;
}

/** Builds the element of one spot. */
function spotElement(spot) {
  const x = Number(spot.x) || 0;
  const y = Number(spot.y) || 0;
  const w = Math.max(Number(spot.w) || 0, 0.01);
  const h = Math.max(Number(spot.h) || 0, 0.01);
  const rotation = Number(spot.rotation) || 0;
  const cx = x + w / 2;
  const cy = y + h / 2;
  const transform = rotation ? `rotate(${num(rotation)} ${num(cx)} ${num(cy)})` : null;

  const g = svg('g', { class: 'spot', 'data-spot': spot.id, 'data-kind': spot.kind, 'data-state': spot.state ?? 'unknown' });
  const title = svg('title', {}, g);
  title.textContent = spotTitle(spot);
  svg('rect', { class: 'bay', x: num(x), y: num(y), width: num(w), height: num(h), transform }, g);

  // A car shape, shown (by CSS) while the spot is occupied.
  const short = Math.min(w, h);
  const long = Math.max(w, h);
  const side = short * 0.16;
  const end = long * 0.1;
  const [cw, ch] = w <= h ? [w - 2 * side, h - 2 * end] : [w - 2 * end, h - 2 * side];
  svg('rect', {
    class: 'car', x: num(cx - cw / 2), y: num(cy - ch / 2), width: num(cw), height: num(ch),
    rx: num(short * 0.22), transform,
  }, g);

  // Label and icon on the bay's long axis, upright whatever the rotation.
  const portrait = h >= w;
  const labelAt = portrait ? [cx, y + h * 0.3] : [x + w * 0.3, cy];
  const iconAt = portrait ? [cx, y + h * 0.72] : [x + w * 0.72, cy];
  const [lx, ly] = rotatePoint(...labelAt, cx, cy, rotation);
  const [ix, iy] = rotatePoint(...iconAt, cx, cy, rotation);
  const quarterTurns = Math.round((((rotation % 180) + 180) % 180) / 90) % 2;
  const vertical = portrait !== (quarterTurns === 1);

  const label = String(spot.label ?? spot.id);
  const fontSize = Math.min(short * 0.42, (long * 0.48) / (0.62 * Math.max(label.length, 1)));
  const text = svg('text', {
    class: 'label', x: num(lx), y: num(ly), 'font-size': num(fontSize),
    transform: vertical ? `rotate(-90 ${num(lx)} ${num(ly)})` : null,
    'aria-hidden': 'true',
  }, g);
  text.textContent = label;

  if (KIND_ICONS.has(spot.kind)) {
    const size = Math.min(short * 0.7, long * 0.36);
    svg('circle', { class: 'badge', cx: num(ix), cy: num(iy), r: num(size / 2) }, g);
    kindIcon(spot.kind, { x: ix - size * 0.4, y: iy - size * 0.4, size: size * 0.8, parent: g });
  }
  return g;
}

/**
 * Renders `level` ({id, name, width, height}) with `spots` (records on that level). Returns
 * {svg, elements: Map(id -> element)}.
 */
export function renderLevel(level, spots) {
  const width = Math.max(Number(level.width) || 0, 1);
  const height = Math.max(Number(level.height) || 0, 1);
  const root = svg('svg', {
    class: 'plan', viewBox: `0 0 ${num(width)} ${num(height)}`, preserveAspectRatio: 'xMidYMid meet',
    role: 'group', 'aria-label': `Floor plan of ${level.name ?? level.id}`,
  });
  svg('rect', { class: 'floor', x: 0, y: 0, width: num(width), height: num(height), rx: num(Math.min(width, height) * 0.01) }, root);
  const layer = svg('g', { class: 'spots' }, root);
  const elements = new Map();
  for (const spot of spots) {
    const element = spotElement(spot);
    layer.appendChild(element);
    elements.set(spot.id, element);
  }
  return { svg: root, elements };
}

/** Brings a spot's element up to date with its record and the chosen vehicle. */
export function updateSpot(element, spot, vehicle) {
  const state = spot.state ?? 'unknown';
  if (element.getAttribute('data-state') !== state) element.setAttribute('data-state', state);
  const dimmed = !fits(vehicle, spot.kind);
  element.classList.toggle('dimmed', dimmed);
  element.setAttribute('data-dimmed', dimmed ? 'true' : 'false');
  const title = element.querySelector('title');
  const text = spotTitle(spot);
  if (title && title.textContent !== text) title.textContent = text;
}

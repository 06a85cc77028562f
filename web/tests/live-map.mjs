#!/usr/bin/env node
// End-to-end check of the live map in headless Chromium against a running parkd.
//
// A sensor message published over real MQTT must reach the browser as a changed spot; the
// vehicle filter must dim what does not fit and agree with the REST availability; a phone
// screen must not scroll sideways; the page must log no errors.
//
// Environment (set by the Rust test that started the server):
//   PARKD_URL          http://127.0.0.1:PORT
//   PARKD_MQTT_HOST    broker host for mosquitto_pub
//   PARKD_MQTT_PORT    broker port
//   PARKD_LOT          lot id
//   PARKD_SPOT         a spot that is free or unknown now (on the first level shown)
//   PARKD_MQTT_USER, PARKD_MQTT_PASSWORD   optional broker login
//   PARKD_SCREENSHOT   optional: where to save a 1280x800 PNG of the page
//   CHROMIUM           optional: the browser binary (default /usr/bin/chromium)
//   PARKD_E2E_TIMEOUT_MS   optional: the whole run's bound (default 60000)
//
// Exit code 0 when every step passed; 1 with a message naming the failed step otherwise;
// 2 when the environment is incomplete.

import { execFile } from 'node:child_process';
import { chromium } from 'playwright-core';

const env = process.env;
const REQUIRED = ['PARKD_URL', 'PARKD_MQTT_HOST', 'PARKD_MQTT_PORT', 'PARKD_LOT', 'PARKD_SPOT'];
const missing = REQUIRED.filter((name) => !env[name]);
if (missing.length) {
  console.error(`live-map e2e: missing environment: ${missing.join(', ')}`);
  process.exit(2);
}

const BASE = env.PARKD_URL.replace(/\/+$/, '');
const LOT = env.PARKD_LOT;
const SPOT = env.PARKD_SPOT;
const TOTAL_MS = Number(env.PARKD_E2E_TIMEOUT_MS) || 60_000;
const CHANGE_MS = 10_000;
const PAGE_URL = `${BASE}/?lot=${encodeURIComponent(LOT)}`;
const EV_KINDS = ['ev', 'standard', 'large'];

class StepFailure extends Error {}

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
let browser = null;
const pageProblems = [];

function log(message) {
  console.log(`live-map e2e [${elapsed()}] ${message}`);
}

async function step(name, body) {
  log(`${name} ...`);
  try {
    const result = await body();
    log(`ok: ${name}`);
    return result;
  } catch (error) {
    const failure = new StepFailure(`${name}: ${error.message}`);
    failure.stack = error.stack;
    throw failure;
  }
}

/** Quotes a value for a CSS attribute selector. */
function attr(value) {
  return JSON.stringify(String(value));
}

function spotSelector(id) {
  return `[data-spot=${attr(id)}]`;
}

async function getJson(path) {
  let response;
  try {
    response = await fetch(`${BASE}${path}`, { headers: { Accept: 'application/json' } });
  } catch (error) {
    throw new Error(`GET ${BASE}${path}: ${error.message}${error.cause?.code ? ` (${error.cause.code})` : ''}`);
  }
  const text = await response.text();
  if (!response.ok) throw new Error(`GET ${path}: HTTP ${response.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

function publish(payload) {
  const topic = `parking/v1/${LOT}/spots/${SPOT}/state`;
  const args = ['-h', env.PARKD_MQTT_HOST, '-p', String(env.PARKD_MQTT_PORT), '-i', 'e2e-browser', '-t', topic, '-m', payload, '-q', '1'];
  if (env.PARKD_MQTT_USER) args.push('-u', env.PARKD_MQTT_USER);
  if (env.PARKD_MQTT_PASSWORD) args.push('-P', env.PARKD_MQTT_PASSWORD);
  return new Promise((resolve, reject) => {
    execFile('mosquitto_pub', args, { timeout: 10_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`mosquitto_pub to ${topic} failed: ${error.message} ${stderr}`.trim()));
      else resolve();
    });
  });
}

/** Collects console errors and uncaught exceptions of `page` into pageProblems. */
function watch(page, label) {
  page.on('console', (message) => {
    if (message.type() === 'error') pageProblems.push(`${label}: console error: ${message.text()}`);
  });
  page.on('pageerror', (error) => pageProblems.push(`${label}: uncaught: ${error.message}`));
  page.on('requestfailed', (request) => {
    // A WebSocket torn down by the browser closing is not a failure of the page.
    if (!request.url().startsWith('ws')) {
      pageProblems.push(`${label}: request failed: ${request.url()} (${request.failure()?.errorText})`);
    }
  });
}

/** What the page shows about `id`: its state, fill and whether it is dimmed; null if absent. */
function readSpot(page, id) {
  return page.evaluate((selector) => {
    const element = document.querySelector(selector);
    if (!element) return null;
    return {
      state: element.getAttribute('data-state'),
      kind: element.getAttribute('data-kind'),
      dimmed: element.getAttribute('data-dimmed') === 'true' && element.classList.contains('dimmed'),
      fill: getComputedStyle(element).fill,
      live: document.body.dataset.live,
      seq: document.body.dataset.seq,
    };
  }, spotSelector(id));
}

/** The page's own colour for free spots (its legend draws a free spot with the same CSS). */
function freeFill(page) {
  return page.evaluate(() => {
    const element = document.querySelector('#legend-states [data-state="free"] .spot');
    return element ? getComputedStyle(element).fill : null;
  });
}

/** Opens the page and waits until it is live and shows `id` (switching level if needed). */
async function openMap(page, levelOf) {
  const response = await page.goto(PAGE_URL, { waitUntil: 'domcontentloaded', timeout: 15_000 });
  if (!response || !response.ok()) throw new Error(`GET ${PAGE_URL}: HTTP ${response?.status()}`);
  try {
    await page.waitForSelector('body[data-live="connected"]', { state: 'attached', timeout: 15_000 });
  } catch {
    const live = await page.evaluate(() => document.body.dataset.live);
    const notice = await page.evaluate(() => document.getElementById('notice')?.textContent ?? '');
    throw new Error(`the live feed did not connect in 15 s (body[data-live]=${live}) ${notice}`.trim());
  }
  await showSpot(page, SPOT, levelOf);
}

/** Makes sure the level holding `id` is drawn, then waits for its element. */
async function showSpot(page, id, levelOf) {
  if (!(await page.$(spotSelector(id)))) {
    const level = levelOf.get(id);
    if (!level) throw new Error(`spot ${id} is not in GET /api/v1/lots/${LOT}/spots`);
    await page.click(`[role="tab"][data-level=${attr(level)}]`, { timeout: 5_000 });
  }
  await page.waitForSelector(spotSelector(id), { state: 'attached', timeout: 10_000 });
}

/** Polls until `check(spot)` holds for the spot's element, or fails with what was seen. */
async function waitForSpot(page, id, what, check) {
  const deadline = Date.now() + CHANGE_MS;
  let seen = null;
  while (Date.now() < deadline) {
    seen = await readSpot(page, id);
    if (seen && check(seen)) return seen;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`spot ${id} did not become ${what} within ${CHANGE_MS / 1000} s; last seen ${JSON.stringify(seen)}`);
}

async function run() {
  browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
    headless: true,
  });

  const { spots } = await step('read the lot over REST', async () => {
    const body = await getJson(`/api/v1/lots/${encodeURIComponent(LOT)}/spots`);
    if (!Array.isArray(body.spots) || !body.spots.some((s) => s.id === SPOT)) {
      throw new Error(`spot ${SPOT} is not among the ${body.spots?.length ?? 0} spots of lot ${LOT}`);
    }
    return body;
  });
  const levelOf = new Map(spots.map((s) => [s.id, s.level]));

  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await desktop.newPage();
  watch(page, 'desktop');

  await step(`open ${PAGE_URL}, live, showing ${SPOT}`, () => openMap(page, levelOf));

  await step(`MQTT occupied:true turns ${SPOT} occupied with another colour`, async () => {
    const before = await readSpot(page, SPOT);
    if (before.state !== 'free' && before.state !== 'unknown') {
      throw new Error(`expected ${SPOT} free or unknown at the start, the page shows ${before.state}`);
    }
    await publish('{"occupied":true}');
    await waitForSpot(page, SPOT, 'occupied (with a new fill)', (s) => s.state === 'occupied' && s.fill !== before.fill);
  });

  await step(`MQTT occupied:false turns ${SPOT} free in the free colour`, async () => {
    const free = await freeFill(page);
    if (!free) throw new Error('the legend has no free spot to take the free colour from');
    await publish('{"occupied":false}');
    await waitForSpot(page, SPOT, `free (fill ${free})`, (s) => s.state === 'free' && s.fill === free);
  });

  await step('the EV filter dims what an EV cannot use and shows the EV free count', async () => {
    await page.click('button[data-vehicle="ev"]');
    const pressed = await page.getAttribute('button[data-vehicle="ev"]', 'aria-pressed');
    if (pressed !== 'true') throw new Error(`the EV filter button is not pressed (aria-pressed=${pressed})`);

    const misfit = ['motorcycle', 'compact', 'accessible']
      .map((kind) => spots.find((s) => s.kind === kind))
      .find(Boolean);
    if (misfit) {
      await showSpot(page, misfit.id, levelOf);
      const seen = await readSpot(page, misfit.id);
      if (!seen.dimmed) throw new Error(`${misfit.kind} spot ${misfit.id} is not dimmed: ${JSON.stringify(seen)}`);
      const fit = spots.find((s) => s.level === misfit.level && EV_KINDS.includes(s.kind));
      if (fit) {
        const fitSeen = await readSpot(page, fit.id);
        if (fitSeen?.dimmed) throw new Error(`${fit.kind} spot ${fit.id} fits an EV but is dimmed`);
      }
    } else {
      log('note: the lot has no spot an EV cannot use; dimming not checked');
    }

    // The counts move with the garage: poll until the page and the API agree.
    const deadline = Date.now() + CHANGE_MS;
    let last = null;
    while (Date.now() < deadline) {
      const availability = await getJson(`/api/v1/lots/${encodeURIComponent(LOT)}/availability?vehicle=ev`);
      const api = availability?.by_vehicle?.ev?.free;
      const shown = await page.evaluate(() => {
        const headline = document.getElementById('headline-free');
        return { text: headline?.textContent?.replace(/\s+/g, ' ').trim() ?? '', free: headline?.dataset.free, vehicle: headline?.dataset.vehicle };
      });
      last = { api, shown };
      if (Number.isInteger(api) && shown.vehicle === 'ev' && shown.free === String(api) && shown.text === `${api} free for EV`) return;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new Error(`the headline does not show the API's EV free count: ${JSON.stringify(last)}`);
  });

  await step('a 390 px wide phone screen does not scroll sideways', async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    try {
      const small = await phone.newPage();
      watch(small, 'phone');
      await openMap(small, levelOf);
      const size = await small.evaluate(() => ({
        scrollWidth: document.documentElement.scrollWidth,
        plan: Math.round(document.querySelector('svg.plan:not([hidden])')?.getBoundingClientRect().width ?? -1),
      }));
      if (size.scrollWidth > 390) throw new Error(`document scrollWidth is ${size.scrollWidth} px (> 390)`);
      if (size.plan <= 0 || size.plan > 390) throw new Error(`the floor plan is ${size.plan} px wide`);
    } finally {
      await phone.close();
    }
  });

  if (env.PARKD_SCREENSHOT) {
    await step(`screenshot to ${env.PARKD_SCREENSHOT}`, async () => {
      await page.click('button[data-vehicle="all"]');
      await page.waitForSelector('.spot.dimmed', { state: 'detached', timeout: 5_000 });
      await page.waitForTimeout(400); // the dimming fades out
      await page.screenshot({ path: env.PARKD_SCREENSHOT, fullPage: false });
    });
  }

  await step('the page logged no errors', async () => {
    if (pageProblems.length) throw new Error(pageProblems.join('\n  '));
  });
}

async function closeBrowser() {
  if (!browser) return;
  const closing = browser.close().catch(() => {});
  browser = null;
  await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 5_000))]);
}

const watchdog = setTimeout(async () => {
  console.error(`live-map e2e: FAILED: the run took longer than ${TOTAL_MS / 1000} s`);
  await closeBrowser();
  process.exit(1);
}, TOTAL_MS);

try {
  await run();
  log('PASSED');
  process.exitCode = 0;
} catch (error) {
  console.error(`live-map e2e: FAILED: ${error.message}`);
  if (!(error instanceof StepFailure) && error.stack) console.error(error.stack);
  if (pageProblems.length) console.error(`page problems:\n  ${pageProblems.join('\n  ')}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await closeBrowser();
}
// fetch's pooled keep-alive connections would hold the process open for seconds.
process.exit(process.exitCode);

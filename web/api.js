// The REST half of docs/live.md: GET helpers that turn RFC 9457 problem+json answers into
// errors carrying the server's title and detail.

export class ApiError extends Error {
  constructor(status, problem, url) {
    const title = problem?.title || `HTTP ${status}`;
    super(problem?.detail ? `${title}: ${problem.detail}` : title);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem ?? null;
    this.url = url;
  }
}

async function getJson(path, { signal } = {}) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: 'application/json' }, signal });
  } catch (error) {
    if (error?.name === 'AbortError') throw error;
    throw new ApiError(0, { title: 'The server cannot be reached', detail: String(error?.message ?? error) }, path);
  }
  const type = response.headers.get('content-type') ?? '';
  if (!response.ok) {
    let problem = null;
    if (type.includes('json')) {
      try {
        problem = await response.json();
      } catch {
        problem = null;
      }
    }
    throw new ApiError(response.status, problem, path);
  }
  return response.json();
}

const lotPath = (lot) => `/api/v1/lots/${encodeURIComponent(lot)}`;

export const api = {
  lots: (options) => getJson('/api/v1/lots', options),
  lot: (lot, options) => getJson(lotPath(lot), options),
  spots: (lot, options) => getJson(`${lotPath(lot)}/spots`, options),
  availability: (lot, vehicle, options) =>
    getJson(`${lotPath(lot)}/availability${vehicle ? `?vehicle=${encodeURIComponent(vehicle)}` : ''}`, options),
};

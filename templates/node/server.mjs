// Slipway's HTTP server around handler.mjs's default export; templates/README.md has the
// contract. Node's standard library only: the image is Debian's nodejs on a minbase, built
// offline.
import { createServer } from "node:http";

const PORT = Number.parseInt(process.env.PORT ?? "", 10) || 8080;
const MAX_BODY = 6 * 1024 * 1024;
// Past this, the rest of a refused body is not worth reading: the connection is cut instead.
const DRAIN_LIMIT = 16 * 1024 * 1024;
const ALLOW = "GET, POST";

const mod = await import(new URL("./handler.mjs", import.meta.url).href);
const handler = typeof mod.default === "function" ? mod.default : mod.handler;
if (typeof handler !== "function") {
  console.error("handler.mjs must `export default function (data) { ... }`");
  process.exit(1);
}

// Fatal: a body that is not UTF-8 is not JSON (as in the Python server), rather than being
// quietly patched with U+FFFD.
const utf8 = new TextDecoder("utf-8", { fatal: true });
let stopping = false;

function send(res, status, text, headers = {}) {
  const body = Buffer.from(text, "utf8");
  const all = { "Content-Type": "application/json", "Content-Length": body.length, ...headers };
  if (stopping) all.Connection = "close";
  res.writeHead(status, all);
  res.end(body);
}

function fail(res, status, code, message, headers) {
  send(res, status, JSON.stringify({ error: { code, message } }), headers);
}

function messageOf(err) {
  // `throw "text"` and error-like objects are thrown too.
  return typeof err?.message === "string" && err.message ? err.message : String(err);
}

function encode(value) {
  if (value === undefined) return "null";
  const text = JSON.stringify(value);
  // JSON.stringify answers undefined (not an error) for a function or a symbol.
  if (text === undefined) throw new TypeError(`a ${typeof value} is not JSON`);
  return text;
}

async function invoke(res, data) {
  let result;
  try {
    result = await handler(data);
  } catch (err) {
    console.error(err);
    return fail(res, 500, "handler_error", messageOf(err));
  }
  let text;
  try {
    text = encode(result);
  } catch (err) {
    const message = `the handler's return value cannot be encoded as JSON: ${messageOf(err)}`;
    console.error(message);
    return fail(res, 500, "invalid_result", message);
  }
  send(res, 200, text);
}

// Every method's body is read (and a GET's or a refused method's dropped): bounded, and never
// left on the connection to be taken for the next request.
function readBody(req, res, done) {
  const declared = Number(req.headers["content-length"]);
  const chunks = [];
  let size = 0;
  let over = false;
  const refuse = () => {
    over = true;
    chunks.length = 0;
    // Answered at once; the rest of the body is still read and dropped (below), so a client
    // that sends it all before reading gets this answer, not a reset, and may keep the
    // connection.
    const headers = declared > DRAIN_LIMIT ? { Connection: "close" } : undefined;
    fail(res, 413, "body_too_large", `the body exceeds ${MAX_BODY} bytes`, headers);
  };
  if (declared > MAX_BODY) refuse();
  req.on("data", (chunk) => {
    size += chunk.length;
    if (over) {
      if (size > DRAIN_LIMIT) req.socket.destroy();
      return;
    }
    if (size > MAX_BODY) return refuse();
    chunks.push(chunk);
  });
  req.on("end", () => {
    if (!over) done(Buffer.concat(chunks));
  });
}

function onPost(res, body) {
  let raw;
  try {
    raw = utf8.decode(body);
  } catch (err) {
    return fail(res, 400, "invalid_json", `the body is not JSON: ${messageOf(err)}`);
  }
  let data = null;
  if (raw.trim() !== "") {
    let parsed;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      return fail(res, 400, "invalid_json", `the body is not JSON: ${messageOf(err)}`);
    }
    // Liberal: anything but an object with "data" is the data itself.
    const wrapped =
      parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) && Object.hasOwn(parsed, "data");
    data = wrapped ? parsed.data : parsed;
  }
  invoke(res, data);
}

function onRequest(req, res) {
  // The client going away mid-body is not this process's error.
  req.on("error", () => {});
  readBody(req, res, (body) => {
    if (req.method === "POST") return onPost(res, body);
    if (req.method === "GET") {
      const q = req.url.indexOf("?");
      // Object.fromEntries keeps the last of repeated keys, as dict() does in the Python server.
      return invoke(res, Object.fromEntries(new URLSearchParams(q < 0 ? "" : req.url.slice(q + 1))));
    }
    fail(res, 405, "method_not_allowed", `${req.method} is not allowed`, { Allow: ALLOW });
  });
}

const server = createServer(onRequest);
// Node would send 100 Continue on its own: refuse a body we would refuse anyway before the
// client sends it.
server.on("checkContinue", (req, res) => {
  if (Number(req.headers["content-length"]) > MAX_BODY) {
    req.on("error", () => {});
    return fail(res, 413, "body_too_large", `the body exceeds ${MAX_BODY} bytes`, { Connection: "close" });
  }
  res.writeContinue();
  onRequest(req, res);
});

// Longer than the API's invocation pool keeps a connection idle (30 s): the server closing an
// idle connection first would race the API reusing it. headersTimeout must stay above it.
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;

function stop() {
  if (stopping) return;
  stopping = true;
  // A connection still answering when the signal came becomes idle only afterwards: it must
  // not then wait out the 65 s above.
  server.keepAliveTimeout = 1;
  // The callback runs once every connection has ended; exit then, whatever timers the
  // handler left behind.
  server.close(() => process.exit(0));
  // Node 18's close() leaves idle keep-alive connections open (19+ closes them itself).
  server.closeIdleConnections();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

server.listen(PORT, "0.0.0.0", () => console.error(`listening on 0.0.0.0:${PORT}`));

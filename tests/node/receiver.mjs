// A CRM's webhook endpoint written in Node: verifies each delivery with the standardwebhooks
// package, answers 204 when it verifies and 400 when it does not, and prints one JSON line per
// request ({"id", "type", "verified", "error"}) for the test to read. Listens on 127.0.0.1 only;
// prints {"port": N} first. The secret comes from the environment variable named in argv[2].
import http from "node:http";
import { Webhook } from "standardwebhooks";

const webhook = new Webhook(process.env[process.argv[2]]);

const server = http.createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const payload = Buffer.concat(chunks).toString("utf8");
    let line;
    try {
      const event = webhook.verify(payload, request.headers);
      line = { id: event.id, type: event.type, verified: true, error: null };
      response.writeHead(204);
    } catch (error) {
      line = { id: request.headers["webhook-id"] ?? null, type: null, verified: false, error: String(error.message) };
      response.writeHead(400);
    }
    response.end();
    process.stdout.write(JSON.stringify(line) + "\n");
  });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});

// The CRDT route as a peer of `kiln gateway` in bench/run_peers.sh: y-websocket's server
// (@y/websocket-server, its setupWSConnection unchanged), one Y.Doc per room in memory.
// `kiln-bench collab --protocol yjs` joins a room by opening ws://HOST:PORT/ROOM, sends each
// op as a Yjs update (a Y.Map entry) and each cursor as an awareness update; the server
// applies both and sends each to every connection of the room, the author's included (its
// echo is the author's acknowledgement). No persistence (YPERSISTENCE unset), as the
// socket.io peer; one node only (y-websocket has no way to share a room between nodes).
//
//   PORT=0 node bench/peers/yws-relay.mjs
// Prints "listening on PORT" once it accepts connections.
import http from "node:http";
import { WebSocketServer } from "ws";
import { setupWSConnection } from "@y/websocket-server/utils";

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
wss.on("connection", setupWSConnection);
const server = http.createServer((_req, res) => {
  res.writeHead(404);
  res.end();
});
server.on("upgrade", (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
});
server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`listening on ${server.address().port}`);
});

// Compiled (not run) by `npm run typecheck`: the README's uses must type-check against index.d.ts,
// and misuse must not (each @ts-expect-error fails the build if the line compiles).
import { connect, PeerixError, type Client, type PeerixEvent, type ChannelMessageData, type LaggedData } from 'peerix-client';

async function main(): Promise<void> {
  const client: Client = await connect();
  const joined = await client.join('lobby', { metadata: { name: 'node' }, persist: true });
  const id: string = joined.id;
  const holders: number = joined.holders;
  const events = await client.subscribe(['connection', 'channel:message'], { room: 'lobby' });
  const sent = await client.sendText('lobby', 'hello', { label: 'chat' });
  const ok: boolean = sent.peers.every((p) => p.ok);
  await client.sendBytes('lobby', new Uint8Array(3), { onProgress: (p) => console.log(p.current, p.total, p.done) });
  for await (const ev of events) {
    if (ev.name === 'channel:message') {
      const d = ev.data as ChannelMessageData;
      console.log(d.type, d.final);
    } else if (ev.name === 'lagged') {
      const l = ev.data as LaggedData;
      console.log(l.from, l.to);
    }
    break;
  }
  const again = await connect();
  const pos = client.position;
  await again.resume(['channel:message'], pos, { room: 'lobby' });
  const left = await client.leave('lobby', { all: true });
  const wasLeft: boolean = left.left;
  const inbox = await again.inbox('lobby', { max: 10 });
  const first: PeerixEvent | undefined = inbox.events[0] as PeerixEvent | undefined;
  try {
    await client.request('no-such-op');
  } catch (e) {
    if (e instanceof PeerixError) console.log(e.code);
  }
  // @ts-expect-error persist is a boolean
  await client.join('lobby', { persist: 'yes' });
  // @ts-expect-error sendText takes a string
  await client.sendText('lobby', 42);
  console.log(id, holders, ok, wasLeft, first);
}

void main;

/**
 * The guard around @grpc/reflection's handler (src/server/reflection.ts), on a stand-in call: a
 * refused caller never reaches the handler, the stream stops reading while its responses are not
 * taken, and the caller's slot is released exactly once however the stream ends.
 */
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { test } from 'node:test';
import { type ServiceError, status } from '@grpc/grpc-js';
import { ErrorCode, SealboxError } from '../../../src/errors';
import { createLogger } from '../../../src/log/logger';
import { addReflection } from '../../../src/server/reflection';

/** A server call whose client reads only when told to (flush), with room for two responses. */
class StandInCall extends Duplex {
  readonly taken: unknown[] = [];
  private readonly waiting: Array<() => void> = [];
  constructor() {
    super({ objectMode: true, highWaterMark: 2 });
  }
  override _read(): void {}
  override _write(chunk: unknown, _encoding: BufferEncoding, done: () => void): void {
    this.taken.push(chunk);
    this.waiting.push(done);
  }
  /** The client takes every response sent so far. */
  flush(): void {
    for (const done of this.waiting.splice(0)) done();
  }
  getPeer(): string {
    return 'unix:test';
  }
  getAuthContext() {
    return {};
  }
}

const log = createLogger('silent');
const LIST = { messageRequest: 'listServices', listServices: '*' };
const tick = () => new Promise((resolve) => setImmediate(resolve));

/** The v1 ServerReflectionInfo handler addReflection registers, with `admit` as the access check. */
function reflectionHandler(admit: () => { release(): void }): (call: StandInCall) => void {
  const handlers: Array<(call: StandInCall) => void> = [];
  addReflection(
    {
      addService(service, implementation) {
        if (service['ServerReflectionInfo']?.path.startsWith('/grpc.reflection.v1.')) {
          handlers.push(implementation['ServerReflectionInfo'] as unknown as (call: StandInCall) => void);
        }
      },
    },
    ['sealbox.v1.Envelope'],
    { admit, idleTimeoutMs: 0, log },
  );
  assert.equal(handlers.length, 1);
  return handlers[0]!;
}

test('a refused caller gets the refusal as its status and never reaches the handler', async () => {
  const call = new StandInCall();
  let error: Partial<ServiceError> | undefined;
  call.on('error', (err: Partial<ServiceError>) => {
    error = err;
  });
  reflectionHandler(() => {
    throw new SealboxError(ErrorCode.ACCESS_DENIED, 'a caller on the envelope socket is not an identity');
  })(call);
  call.push(LIST);
  await tick();
  assert.equal(error?.code, status.PERMISSION_DENIED);
  assert.equal(call.taken.length, 0, 'no reflection response');
});

test('the stream stops reading while its responses wait, and goes on once they are taken', async () => {
  const call = new StandInCall();
  reflectionHandler(() => ({ release() {} }))(call);
  for (let i = 0; i < 10; i++) call.push(LIST);
  await tick();
  // Two responses fill the write buffer; the other requests wait unread (the client's HTTP/2 window
  // then stops it), instead of ten responses piling up in memory.
  assert.ok(call.writableLength <= 2, `responses buffered: ${call.writableLength}`);
  assert.ok(call.readableLength >= 7, `requests left unread: ${call.readableLength}`);
  for (let rounds = 0; call.taken.length < 10 && rounds < 50; rounds++) {
    call.flush();
    await tick();
  }
  assert.equal(call.taken.length, 10, 'every request answered once the client reads');
  const first = call.taken[0] as { listServicesResponse?: { service: Array<{ name: string }> } };
  assert.deepEqual(
    first.listServicesResponse?.service.map((s) => s.name),
    ['sealbox.v1.Envelope'],
  );
});

test("the caller's slot is released exactly once, however the stream ends", async () => {
  for (const endings of [
    ['cancelled', 'close'],
    ['finish', 'close'],
    ['error', 'cancelled', 'close'],
  ]) {
    const call = new StandInCall();
    call.on('error', () => {});
    let released = 0;
    reflectionHandler(() => ({ release: () => released++ }))(call);
    assert.equal(released, 0);
    for (const event of endings) call.emit(event, event === 'error' ? new Error('gone') : undefined);
    assert.equal(released, 1, endings.join(', '));
  }
});

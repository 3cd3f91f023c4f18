/**
 * Structured JSON logs (pino). Never log key material, plaintext or whole ciphertexts: log key ids,
 * aliases, sizes and error codes. The redact list is a second line of defence, not the first.
 */
import { type Logger, pino } from 'pino';

export type { Logger };

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      name: 'sealbox',
      level,
      base: { pid: process.pid },
      redact: { paths: ['*.dek', '*.plaintext', '*.key', '*.keys', '*.wrappedDek'], censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ dest: 2, sync: false }),
  );
}

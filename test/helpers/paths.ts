import { join } from 'node:path';

/** The repository root, whether this file runs from dist/test/helpers or another build directory. */
export const REPO_ROOT = join(__dirname, '..', '..', '..');

/** test/vectors in the source tree (vector files are read from the source, not copied into dist). */
export const VECTORS_DIR = join(REPO_ROOT, 'test', 'vectors');

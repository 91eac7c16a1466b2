// The part of tar-stream 2.x (dockerode's own tar library, via tar-fs) that the Docker runtime
// uses: packing a build context and a fault file. The package ships no types.
declare module 'tar-stream' {
  import type { Readable } from 'node:stream';

  export interface Headers {
    name: string;
    size?: number;
    mode?: number;
    mtime?: Date;
    type?: 'file' | 'directory' | 'symlink';
    linkname?: string;
    uid?: number;
    gid?: number;
  }

  export interface Pack extends Readable {
    entry(header: Headers, buffer?: Buffer | string, callback?: (err?: Error | null) => void): void;
    finalize(): void;
  }

  export function pack(): Pack;
}

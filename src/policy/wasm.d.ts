// The few WebAssembly globals toolgate touches. Node provides them at run
// time; TypeScript only declares them in the DOM libs, which we don't load.
declare namespace WebAssembly {
  interface MemoryDescriptor {
    initial: number;
    maximum?: number;
  }
  class Memory {
    constructor(descriptor: MemoryDescriptor);
    readonly buffer: ArrayBuffer;
    grow(delta: number): number;
  }
  interface Instance {
    readonly exports: Record<string, unknown>;
  }
  interface WebAssemblyInstantiatedSource {
    instance: Instance;
  }
  type Module = object;
}
type BufferSource = ArrayBufferView | ArrayBuffer;
type Response = object;

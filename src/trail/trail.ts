// Transitional: the trail is split by job (writer, reader, verify, paths, format); import "../trail".
export * from "./index";

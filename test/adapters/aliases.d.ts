// The second major versions are installed under alias names; they share the types of
// the current major for what the tests use.
declare module 'express4' {
  import express from 'express';
  export default express;
}
declare module 'koa2' {
  import Koa from 'koa';
  export default Koa;
}

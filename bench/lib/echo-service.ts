/**
 * An echo service for measuring the transport alone: the same grpc-js, socket and server options as
 * sealbox, with identity (de)serializers over Buffers instead of protobuf and no crypto. `Echo` is a
 * bidi stream (the streaming baseline), `EchoUnary` answers one message with itself (the unary one).
 */
import type { ChannelOptions, ServiceDefinition } from '@grpc/grpc-js';

const identity = (b: Buffer): Buffer => b;

export const ECHO_SERVICE: ServiceDefinition = {
  Echo: {
    path: '/bench.Echo/Echo',
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
  EchoUnary: {
    path: '/bench.Echo/EchoUnary',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

/** The options src/server/server.ts gives sealbox's server (with the default stream.maxMessageBytes). */
export const SERVER_OPTIONS: ChannelOptions = {
  'grpc.max_receive_message_length': 8 * 1024 * 1024,
  'grpc.max_send_message_length': -1,
};

// Property tests of this domain land with its codec.

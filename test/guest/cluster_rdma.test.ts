/**
 * The cluster's child-process tests (kill -9 of the primary under load,
 * expiry, stalled secondary, intruders) over real RDMA: inside the guest
 * (RDMA_IN_GUEST=1) they switch themselves to transport rdma on 192.0.2.1.
 * On the host they already run over tcp as test/cluster_*.test.ts. Inside the guest a
 * missing ACTIVE device is one more failing test (test/fixtures/guest_device.ts).
 */
import { test } from "node:test";
import { IN_GUEST } from "../fixtures/cluster_env.ts";
import { rdmaSkip } from "../fixtures/guest_device.ts";
import "../cluster_failover.test.ts";
import "../cluster_security.test.ts";

if (IN_GUEST) await rdmaSkip(test);

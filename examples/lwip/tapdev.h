/*
 * tapdev.h -- a small lwIP network interface over a Linux tap device,
 * for the lwIP example (the host stands in for a board's Ethernet MAC).
 *
 *   static struct netif nif;                   never on a stack
 *   tapdev_configure("tap0", mac);             before netif_add
 *   LOCK_TCPIP_CORE();
 *   netif_add(&nif, &ip, &mask, &gw, NULL, tapdev_init, tcpip_input);
 *   ...
 *   UNLOCK_TCPIP_CORE();
 *
 * Why not Debian's tapif_init(): see the comment at the top of tapdev.c.
 */
#ifndef TAPDEV_H
#define TAPDEV_H

#include <stddef.h>

#include "lwip/err.h"
#include "lwip/netif.h"

/* Counters of the driver. */
struct tapdev_stats {
	unsigned long rx_frames, rx_bytes, rx_dropped;
	unsigned long tx_frames, tx_bytes, tx_dropped;
	size_t rx_stack_peak;     /* bytes of the reader thread's stack used */
	size_t rx_stack_size;
};

/* The tap device to attach to (it must exist and be up on the host side:
 * ip tuntap add dev NAME mode tap) and the interface's MAC address. Call
 * before netif_add(..., tapdev_init, ...). */
void tapdev_configure(const char *ifname, const unsigned char mac[6]);

/* netif init function: opens the device and starts the reader thread. */
err_t tapdev_init(struct netif *nif);

/* Stop the reader thread and close the device (after netif_remove or at
 * exit). */
void tapdev_stop(void);

/* A snapshot of the counters. */
void tapdev_get_stats(struct tapdev_stats *out);

#endif

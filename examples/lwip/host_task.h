/*
 * host_task.h -- a thread with a fixed, painted stack, standing in for an
 * RTOS task of a given stack size in the lwIP example: the stack is
 * filled with a pattern before the thread starts, so the deepest byte the
 * thread overwrote gives its peak stack use (stack painting).
 *
 * Host-only instrumentation; a board has its RTOS's own high-water mark
 * (e.g. uxTaskGetStackHighWaterMark on FreeRTOS).
 */
#ifndef HOST_TASK_H
#define HOST_TASK_H

#include <pthread.h>
#include <stddef.h>

struct host_task {
	pthread_t thread;
	unsigned char *stack;
	size_t size;
	int started;
};

/* Start fn(arg) on a new thread with a painted stack of size bytes.
 * Returns 0 or -1. */
int host_task_start(struct host_task *t, size_t size, void *(*fn)(void *),
	void *arg);

/* Wait for the thread to end (its stack stays mapped for
 * host_task_peak). Returns 0 or -1. */
int host_task_join(struct host_task *t);

/* Unmap the stack of a joined task. */
void host_task_free(struct host_task *t);

/* Bytes of the stack overwritten so far (the thread may still run; the
 * count includes glibc's thread descriptor and TLS at the top). */
size_t host_task_peak(const struct host_task *t);

/* The same, by another method, for a thread whose stack we did not
 * allocate (lwIP's tcpip thread): called on that thread, scans its
 * (zero-filled when mapped) stack from the far end for the first
 * non-zero byte. Approximate: a frame that stored only zeros is not
 * seen. Returns 0 when the stack bounds are unknown. */
size_t host_thread_stack_used(size_t *stack_size);

/* What the two methods above count for a thread that does nothing
 * (glibc's thread descriptor, TLS and start-up frames): subtract it to
 * get the thread function's own use. */
size_t host_task_baseline(void);
size_t host_thread_baseline(void);

#endif

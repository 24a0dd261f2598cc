/* Preloaded into a benchmark process (LD_PRELOAD): the CPU as an AVX2-only x86 machine sees it.
 *
 * XNNPACK picks its kernels from CPUID when it starts (through the cpuinfo library). Linux can
 * make the CPUID instruction fault in a process (arch_prctl ARCH_SET_CPUID, on CPUs with the
 * cpuid_fault flag); the SIGSEGV handler below then runs the real CPUID and clears the feature
 * bits of AVX-512, AVX-VNNI and AMX before handing the result back. Everything else of the CPU
 * is as it is: the same cores and caches, so what changes in the timings is the kernels.
 * glibc has read CPUID before this runs (its own string functions keep their AVX-512 forms).
 *
 * avx512f_visible() reports what the process sees, so the benchmark can check the mask took.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                     : "a"(leaf), "c"(subleaf));
}

static void on_fault(int sig, siginfo_t *info, void *context) {
    greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    (void)info;
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault: die of it as without us */
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)regs[REG_RAX], subleaf = (uint32_t)regs[REG_RCX], r[4];
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    cpuid(leaf, subleaf, r);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    if (leaf == 7 && subleaf == 0) {
        /* EBX: avx512 f, dq, ifma, pf, er, cd, bw, vl; ECX: vbmi, vbmi2, vnni, bitalg,
         * vpopcntdq; EDX: 4vnniw, 4fmaps, vp2intersect, amx-bf16, fp16, amx-tile, amx-int8 */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
                  (1u << 30) | (1u << 31));
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
                  (1u << 25));
    } else if (leaf == 7 && subleaf == 1) {
        r[0] &= ~((1u << 4) | (1u << 5)); /* avx-vnni, avx512-bf16 */
    }
    regs[REG_RAX] = r[0];
    regs[REG_RBX] = r[1];
    regs[REG_RCX] = r[2];
    regs[REG_RDX] = r[3];
    regs[REG_RIP] += 2; /* past the CPUID instruction */
}

__attribute__((constructor)) static void hide_avx512(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &action, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0)
        perror("hide_avx512: arch_prctl(ARCH_SET_CPUID, 0)");
}

int avx512f_visible(void) {
    uint32_t r[4];
    cpuid(7, 0, r);
    return (r[1] >> 16) & 1;
}

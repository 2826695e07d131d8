/* sum3(a, b, c): hand-written assembly. The builder cannot tell what a
 * change to an assembly source means for running code, so the --source
 * driver refuses it. */
	.text
	.globl	sum3
	.type	sum3, @function
sum3:
	leal	(%rdi,%rsi), %eax
	addl	%edx, %eax
	ret
	.size	sum3, .-sum3
	.section	.note.GNU-stack,"",@progbits

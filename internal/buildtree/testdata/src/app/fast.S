/* fast.S: a function written in assembly. */
	.text
	.globl asm_value
	.type asm_value, @function
asm_value:
	movl $5, %eax
	ret
	.size asm_value, .-asm_value
	.section .note.GNU-stack,"",@progbits
